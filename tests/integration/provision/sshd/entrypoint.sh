#!/bin/sh
# AUTHORIZED_KEY: the public key the test session generated; both users accept it.
set -e
for user in kit pw nosudo; do
  install -d -m 0700 -o "$user" -g "$user" "/home/$user/.ssh"
  printf '%s\n' "$AUTHORIZED_KEY" > "/home/$user/.ssh/authorized_keys"
  chown "$user:$user" "/home/$user/.ssh/authorized_keys"
  chmod 0600 "/home/$user/.ssh/authorized_keys"
done
ssh-keygen -A >/dev/null
exec /usr/sbin/sshd -D -e
