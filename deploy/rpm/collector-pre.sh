# The collector's system user, before its files are installed (systemd-sysusers when there is
# one, else useradd).
if command -v systemd-sysusers >/dev/null 2>&1; then
    echo 'u evident-collector - "Evident collector" /var/lib/evident-collector /usr/sbin/nologin' \
        | systemd-sysusers - || :
elif ! getent passwd evident-collector >/dev/null; then
    useradd --system --user-group --home-dir /var/lib/evident-collector --no-create-home \
        --shell /sbin/nologin --comment "Evident collector" evident-collector || :
fi
