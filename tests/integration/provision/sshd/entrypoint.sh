#!/bin/sh
# AUTHORIZED_KEY: the public key the test session generated; every user accepts it.
set -e
for user in kit pw nosudo; do
  install -d -m 0700 -o "$user" -g "$user" "/home/$user/.ssh"
  printf '%s\n' "$AUTHORIZED_KEY" > "/home/$user/.ssh/authorized_keys"
  chown "$user:$user" "/home/$user/.ssh/authorized_keys"
  chmod 0600 "/home/$user/.ssh/authorized_keys"
done
# ALLOW_FROM (optional): the one address logins are accepted from (a bastion's). Docker lets the machine
# running the tests reach even an internal network, so this is what makes the bastion the only way in.
if [ -n "${ALLOW_FROM:-}" ]; then
  echo "AllowUsers *@${ALLOW_FROM}" >> /etc/ssh/sshd_config
fi
ssh-keygen -A >/dev/null
exec /usr/sbin/sshd -D -e
