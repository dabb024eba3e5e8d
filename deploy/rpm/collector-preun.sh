# Last removal: stop and disable (as %systemd_preun does). The data directory stays.
if [ "$1" -eq 0 ] && [ -d /run/systemd/system ]; then
    systemctl disable --now evident-collector.service >/dev/null 2>&1 || :
fi
