# hostbeat %post ($1: 1 on install, 2 or more on upgrade). The same steps as the
# .deb's postinst, written out as rpm has no debhelper snippets.
systemd-sysusers /usr/lib/sysusers.d/hostbeat.conf || :
journalctl --update-catalog || :
if [ "$1" -eq 1 ]; then
    # The env file holds the client token: root and the service's group only.
    chown root:hostbeat /etc/hostbeat/hostbeat.env
    chmod 0640 /etc/hostbeat/hostbeat.env
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || :
    if [ "$1" -eq 1 ]; then
        # Without a token it exits 78 with what to configure, and is not restarted.
        systemctl enable hostbeat.service || :
        systemctl start hostbeat.service || :
        echo "hostbeat: put HOSTBEAT_CLIENT_TOKEN=<token> in /etc/hostbeat/hostbeat.env" \
            "and Environment=HOSTBEAT_SERVER_URL=<url> in a drop-in (systemctl edit hostbeat)," \
            "then run: systemctl restart hostbeat"
    else
        systemctl try-restart hostbeat.service || :
    fi
fi
