# The config is %config(noreplace): rpm keeps an edited one as config.toml.rpmsave on removal.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
exit 0
