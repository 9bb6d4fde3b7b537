#!/bin/sh
# Stand-in for the K3s install script (https://get.k3s.io): records how it was called and lays down
# the files a real install leaves behind (binary, kubeconfig, node token, uninstall scripts).
set -e
mkdir -p /var/lib/standin /etc/rancher/k3s
# Lets tests check that config.yaml (and registries.yaml) were written before the install ran.
[ -f /etc/rancher/k3s/config.yaml ] && echo "install.sh saw /etc/rancher/k3s/config.yaml" >> /var/log/standin.log
[ -f /etc/rancher/k3s/registries.yaml ] && echo "install.sh saw /etc/rancher/k3s/registries.yaml" >> /var/log/standin.log
echo "$(date +%s.%N) $(hostname) install.sh $* ${INSTALL_K3S_VERSION:-}" >> /var/log/standin-timeline.log
echo "install.sh $* INSTALL_K3S_VERSION=${INSTALL_K3S_VERSION:-} INSTALL_K3S_SKIP_DOWNLOAD=${INSTALL_K3S_SKIP_DOWNLOAD:-} K3S_URL=${K3S_URL:-} K3S_TOKEN=${K3S_TOKEN:-}" >> /var/log/standin.log
if [ "${INSTALL_K3S_SKIP_DOWNLOAD:-}" != "true" ]; then
  install -m 0755 /opt/standin/k3s /usr/local/bin/k3s
fi
[ -n "${INSTALL_K3S_VERSION:-}" ] && echo "$INSTALL_K3S_VERSION" > /var/lib/standin/k3s-version
mode="${1:-server}"
if [ -n "${K3S_URL:-}" ] && [ "$mode" != "server" ]; then mode=agent; fi
if [ "$mode" = "server" ]; then
  mkdir -p /var/lib/rancher/k3s/server
  # K3s runs embedded etcd when it initialises a cluster or joins one; a lone server keeps SQLite.
  if grep -q -e '^cluster-init: true' -e '^server:' /etc/rancher/k3s/config.yaml 2>/dev/null; then
    mkdir -p /var/lib/rancher/k3s/server/db/etcd
  fi
  [ -f /var/lib/rancher/k3s/server/node-token ] || echo "K10standin::server:$(hostname)-token" > /var/lib/rancher/k3s/server/node-token
  chmod 0600 /var/lib/rancher/k3s/server/node-token
  cat > /etc/rancher/k3s/k3s.yaml <<YAML
apiVersion: v1
kind: Config
clusters:
- cluster:
    certificate-authority-data: Q0E=
    server: https://127.0.0.1:6443
  name: default
contexts:
- context:
    cluster: default
    user: default
  name: default
current-context: default
preferences: {}
users:
- name: default
  user:
    client-certificate-data: Q0VSVA==
    client-key-data: S0VZ
YAML
  chmod 0600 /etc/rancher/k3s/k3s.yaml
  printf '#!/bin/sh\necho k3s-uninstall >> /var/log/standin.log\nrm -f /usr/local/bin/k3s /etc/rancher/k3s/k3s.yaml /usr/local/bin/k3s-uninstall.sh\n' > /usr/local/bin/k3s-uninstall.sh
  chmod 0755 /usr/local/bin/k3s-uninstall.sh
else
  printf '#!/bin/sh\necho k3s-agent-uninstall >> /var/log/standin.log\nrm -f /usr/local/bin/k3s /usr/local/bin/k3s-agent-uninstall.sh\n' > /usr/local/bin/k3s-agent-uninstall.sh
  chmod 0755 /usr/local/bin/k3s-agent-uninstall.sh
fi
