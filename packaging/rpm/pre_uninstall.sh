# hostbeat %preun ($1: 0 on erase, 1 or more on upgrade): stop and disable on erase.
if [ "$1" -eq 0 ] && [ -d /run/systemd/system ]; then
    systemctl disable --now hostbeat.service || :
fi
