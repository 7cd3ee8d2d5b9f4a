#!/bin/sh
# virtcenter lab guest: PID 1 of the initramfs (busybox sh). Never exits.
export PATH=/bin LD_LIBRARY_PATH=/lib/x86_64-linux-gnu
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /run/vc /dev/virtio-ports
exec 0</dev/console 1>/dev/console 2>&1
log() { echo "vc-init: $*"; }

# Kernel modules, in dependency order (computed at build time from modinfo depends=).
while read -r m; do
  insmod "/lib/modules/$m.ko" || log "insmod $m failed"
done </etc/vc/modules

# Settings from the kernel command line.
HOSTNAME=vcguest IP= SEED=
for w in $(cat /proc/cmdline); do
  case "$w" in
    vc.hostname=*) HOSTNAME=${w#vc.hostname=} ;;
    vc.ip=*) IP=${w#vc.ip=} ;;
    vc.seed=*) SEED=${w#vc.seed=} ;;  # reserved
  esac
done
# A cloud-init NoCloud seed (a block device holding ISO 9660 label cidata): the subset of
# cloud-init this guest implements: meta-data's local-hostname and instance-id, and the
# /etc/machine-id entry of user-data's write_files.
INSTANCE_ID=
mkdir -p /run/vc/seed
for dev in /dev/vd?; do
  [ -b "$dev" ] || continue
  if mount -t iso9660 -o ro "$dev" /run/vc/seed 2>/dev/null; then
    if [ -f /run/vc/seed/meta-data ]; then
      v=$(sed -n 's/^local-hostname: *//p' /run/vc/seed/meta-data | tr -d "'\"")
      [ -n "$v" ] && HOSTNAME=$v
      INSTANCE_ID=$(sed -n 's/^instance-id: *//p' /run/vc/seed/meta-data | tr -d "'\"")
      mid=$(awk '/^- path: \/etc\/machine-id$/ {m=1; next} m && /^  content:/ {sub(/^  content: */, ""); gsub(/[^0-9a-f]/, ""); print; exit} /^- / {m=0}' /run/vc/seed/user-data 2>/dev/null)
      [ -n "$mid" ] && echo "$mid" >/etc/machine-id
      # network-config v2: the first address of eth0 (over vc.ip=).
      a=$(awk '/^ *addresses:$/ {getline; sub(/^ *- */, ""); gsub(/["\047]/, ""); print; exit}' /run/vc/seed/network-config 2>/dev/null)
      [ -n "$a" ] && IP=$a
      log "seed from $dev: hostname=$HOSTNAME instance-id=$INSTANCE_ID"
      break
    fi
    umount /run/vc/seed
  fi
done
hostname "$HOSTNAME"
echo "$HOSTNAME" >/etc/hostname
# machine-id: from the seed, else random, made once (the root is an initramfs, so once per boot).
[ -s /etc/machine-id ] || tr -d - </proc/sys/kernel/random/uuid >/etc/machine-id
read -r MACHINE_ID </etc/machine-id
# SSH host key, made now (a RAM root: every boot is the first boot of its instance id).
SSH_HOST_KEY=
if [ -x /bin/dropbearkey ]; then
  mkdir -p /etc/dropbear
  rm -f /etc/dropbear/dropbear_ed25519_host_key
  if dropbearkey -t ed25519 -f /etc/dropbear/dropbear_ed25519_host_key >/dev/null 2>&1; then
    SSH_HOST_KEY=$(dropbearkey -y -f /etc/dropbear/dropbear_ed25519_host_key 2>/dev/null | sed -n 's/^Fingerprint: *//p' | tr -d '"\\')
  fi
  [ -n "$SSH_HOST_KEY" ] || log "ssh host key generation failed"
fi

ip link set lo up
if [ -n "$IP" ]; then
  ip link set eth0 up && ip addr add "$IP" dev eth0 || log "cannot configure eth0 with $IP"
  IPJSON="\"$IP\""
else
  IPJSON=null
fi

# The heartbeat port: no udev here, so make the /dev/virtio-ports link ourselves.
PORT=/dev/virtio-ports/org.virtcenter.heartbeat
i=0
while [ ! -e "$PORT" ] && [ $i -lt 100 ]; do
  for d in /sys/class/virtio-ports/*; do
    [ -r "$d/name" ] || continue
    read -r n <"$d/name"
    [ "$n" = org.virtcenter.heartbeat ] && ln -sf "../${d##*/}" "$PORT"
  done
  [ -e "$PORT" ] || usleep 50000
  i=$((i + 1))
done
echo 0 >/run/vc/burn

halt_now() {  # clean power off: QEMU exits with a guest shutdown
  log "power off ($1)"
  [ -s /run/vc/burn.pid ] && kill "$(cat /run/vc/burn.pid)" 2>/dev/null
  sync
  poweroff -f
}

# ACPI power button: button.ko makes a "Power Button" input device; any event on it powers off.
for d in /sys/class/input/input*; do
  read -r n <"$d/name" 2>/dev/null || continue
  [ "$n" = "Power Button" ] || continue
  for e in "$d"/event*; do
    [ -e "$e" ] || continue
    ( dd if="/dev/input/${e##*/}" of=/dev/null bs=24 count=1 2>/dev/null && halt_now acpi ) &
  done
done

if [ ! -e "$PORT" ]; then
  log "no virtio-serial port org.virtcenter.heartbeat; idling"
  while :; do sleep 3600; done
fi
exec 3<>"$PORT"

uptime_cs() {  # uptime in centiseconds, into $now
  read -r u _ </proc/uptime
  now=$(( ${u%.*} * 100 + 1${u#*.} - 100 ))
}

burn_loop() {  # burn $1 percent of one CPU: busy for $1 cs of every second, asleep for the rest
  pct=$1
  while :; do
    uptime_cs; start=$now; end=$((start + pct))
    while [ $now -lt $end ]; do uptime_cs; done
    rest=$(( (start + 100 - now) * 10000 ))
    [ $rest -gt 0 ] && usleep $rest
  done
}

heartbeat_loop() {
  seq=0
  while :; do
    seq=$((seq + 1))
    read -r up _ </proc/uptime
    read -r burn </run/vc/burn
    printf '{"seq": %d, "uptime": %s, "hostname": "%s", "machine_id": "%s", "instance_id": "%s", "ssh_host_key": "%s", "burn": %d, "ip": %s}\n' \
      $seq "$up" "$HOSTNAME" "$MACHINE_ID" "$INSTANCE_ID" "$SSH_HOST_KEY" "$burn" "$IPJSON" >&3
    sleep 1
  done
}
heartbeat_loop &

reply() { printf '%s\n' "$1" >&3; }

is_uint() { case "$1" in ''|*[!0-9]*) return 1 ;; esac; [ ${#1} -le 6 ]; }

do_burn() {
  if ! is_uint "$1" || [ "$1" -gt 100 ]; then
    reply '{"reply": "burn", "ok": false, "error": "usage: burn <0..100>"}'; return
  fi
  if [ -s /run/vc/burn.pid ]; then kill "$(cat /run/vc/burn.pid)" 2>/dev/null; fi
  : >/run/vc/burn.pid
  pct=$(( $1 + 0 ))
  if [ $pct -gt 0 ]; then
    burn_loop $pct &
    echo $! >/run/vc/burn.pid
  fi
  echo $pct >/run/vc/burn
  reply "{\"reply\": \"burn\", \"ok\": true, \"pct\": $pct}"
}

do_write_pattern() {
  if ! is_uint "$1" || [ "$1" -eq 0 ]; then
    reply '{"reply": "write-pattern", "ok": false, "error": "usage: write-pattern <MiB>"}'; return
  fi
  if [ ! -b /dev/vda ]; then
    reply '{"reply": "write-pattern", "ok": false, "error": "no /dev/vda"}'; return
  fi
  mib=$(( $1 + 0 )); n=$((mib * 256)); b=0
  pad=$(cat /etc/vc/pattern-pad)
  { while [ $b -lt $n ]; do printf 'VCPAT%010d\n%s\n' $b "$pad"; b=$((b + 1)); done; } >/dev/vda
  rc=$?
  sync
  if [ $rc -eq 0 ]; then ok=true; else ok=false; fi
  reply "{\"reply\": \"write-pattern\", \"ok\": $ok, \"mib\": $mib, \"blocks\": $n}"
}

do_ping() {
  case "$1" in
    ''|*[!0-9.]*) reply '{"reply": "ping", "ok": false, "error": "usage: ping <IPv4>"}'; return ;;
  esac
  ok=false
  for try in 1 2; do
    if ping -c 1 -W 2 "$1" >/dev/null 2>&1; then ok=true; break; fi
  done
  reply "{\"reply\": \"ping\", \"ip\": \"$1\", \"ok\": $ok}"
}

do_checksum() {  # SHA-256 of a whole disk as the guest sees it: checksum [vda|vdb|...]
  d=${1:-vda}
  case "$d" in vd[a-z]) ;; *) reply '{"reply": "checksum", "ok": false, "error": "usage: checksum <vdX>"}'; return ;; esac
  if [ ! -b "/dev/$d" ]; then
    reply "{\"reply\": \"checksum\", \"ok\": false, \"error\": \"no /dev/$d\"}"; return
  fi
  sum=$(sha256sum "/dev/$d" | cut -d' ' -f1)
  reply "{\"reply\": \"checksum\", \"ok\": true, \"dev\": \"$d\", \"sha256\": \"$sum\", \"bytes\": $(( $(cat /sys/block/$d/size) * 512 ))}"
}

# A root shell on the serial console (what the dashboard's console shows), respawned on exit.
( while :; do setsid cttyhack sh -i; sleep 1; done ) </dev/ttyS0 >/dev/ttyS0 2>&1 &

log "up: hostname=$HOSTNAME ip=${IP:-none}"
while :; do
  # read returns at once with EOF while no host side is connected to the port.
  while read -r cmd arg rest <&3; do
    case "$cmd" in
      burn) do_burn "$arg" ;;
      write-pattern) do_write_pattern "$arg" ;;
      ping) do_ping "$arg" ;;
      hostname) reply "{\"reply\": \"hostname\", \"hostname\": \"$(hostname)\"}" ;;
      checksum) do_checksum "$arg" ;;
      poweroff) reply '{"reply": "poweroff", "ok": true}'; usleep 300000; halt_now command ;;
      '') ;;
      *) case "$cmd" in *[!A-Za-z0-9_.-]*) cmd=invalid ;; esac
         reply "{\"reply\": \"$cmd\", \"ok\": false, \"error\": \"unknown command\"}" ;;
    esac
  done
  usleep 200000
done
