# hostbeat %postun ($1: 0 on erase). rpm has no purge: an erase is the end, so the
# state (agent id, sequence) goes too. A modified env file is kept by rpm as
# /etc/hostbeat/hostbeat.env.rpmsave (it holds the operator's token).
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || :
fi
if [ "$1" -eq 0 ]; then
    rm -rf /var/lib/hostbeat
fi
