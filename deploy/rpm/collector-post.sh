# New install: enable and start; upgrade: restart (as %systemd_post and %systemd_postun_with_restart do).
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -eq 1 ]; then
        systemctl enable --now evident-collector.service >/dev/null 2>&1 || :
    else
        systemctl try-restart evident-collector.service >/dev/null 2>&1 || :
    fi
fi
