#!/usr/bin/env bash
# An OpenSSH server on 127.0.0.1:2222 for the SSH tunnel tests: a user `sluicetunnel`
# who may only forward ports, and client keys in each format a secret may carry (RSA
# PEM, RSA and ed25519 in OpenSSH format), plus one key it does not know. Everything
# lives under /var/lib/sluice-tests/ssh and is made once. Sourced by infra/services.sh.
SSH_DIR=/var/lib/sluice-tests/ssh
SSH_PORT=2222

if [ ! -x /usr/sbin/sshd ]; then
  log "installing OpenSSH server"
  apt_install openssh-server
fi
id sluicetunnel >/dev/null 2>&1 || as_root useradd --create-home --shell /bin/bash sluicetunnel
# No password, but not locked either: sshd refuses locked accounts even for keys.
as_root usermod -p '*' sluicetunnel
if [ ! -s "$SSH_DIR/stranger" ]; then
  log "making SSH keys in $SSH_DIR"
  as_root mkdir -p "$SSH_DIR"
  as_root ssh-keygen -q -t ed25519 -N '' -C 'sluice test host' -f "$SSH_DIR/host_ed25519"
  as_root ssh-keygen -q -t rsa -b 2048 -m PEM -N '' -C 'rsa pem' -f "$SSH_DIR/rsa_pem"
  as_root ssh-keygen -q -t rsa -b 2048 -N '' -C 'rsa openssh' -f "$SSH_DIR/rsa_openssh"
  as_root ssh-keygen -q -t ed25519 -N '' -C 'ed25519' -f "$SSH_DIR/ed25519"
  as_root ssh-keygen -q -t ed25519 -N '' -C 'unknown to the server' -f "$SSH_DIR/stranger"
  cat "$SSH_DIR"/rsa_pem.pub "$SSH_DIR"/rsa_openssh.pub "$SSH_DIR"/ed25519.pub | as_root tee "$SSH_DIR/authorized_keys" >/dev/null
  as_root tee "$SSH_DIR/sshd_config" >/dev/null <<CONF
ListenAddress 127.0.0.1
Port $SSH_PORT
HostKey $SSH_DIR/host_ed25519
PidFile /run/sluice-tests-sshd.pid
AuthorizedKeysFile $SSH_DIR/authorized_keys
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AllowUsers sluicetunnel
AllowTcpForwarding local
PermitOpen 127.0.0.1:5432 127.0.0.1:3306 localhost:5432 localhost:3306
X11Forwarding no
PermitTTY no
UsePAM no
CONF
  as_root chmod 755 "$SSH_DIR"
  as_root chmod 644 "$SSH_DIR"/*
  as_root chmod 600 "$SSH_DIR/host_ed25519"
fi
if ! port_open "$SSH_PORT"; then
  as_root mkdir -p /run/sshd
  log "starting OpenSSH on 127.0.0.1:$SSH_PORT"
  as_root /usr/sbin/sshd -f "$SSH_DIR/sshd_config" -E "$SSH_DIR/sshd.log"
  wait_port "$SSH_PORT" sshd "$SSH_DIR/sshd.log"
fi
