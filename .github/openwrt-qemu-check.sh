#!/bin/sh
# Boot OpenWrt's x86-64 image in QEMU, install the acp packages, and check the service:
# `ubus call acp status` answers, and `/etc/init.d/acp stop` leaves no network namespace.
# Usage: openwrt-qemu-check.sh RELEASE PACKAGE_DIR   (run by .github/workflows/openwrt.yml)
set -eu
release=$1
pkgdir=$2
work=$(mktemp -d)
image="openwrt-$release-x86-64-generic-ext4-combined.img"
url="https://downloads.openwrt.org/releases/$release/targets/x86/64/$image.gz"

curl -fsSL "$url" | gunzip >"$work/$image" || true # gunzip warns about trailing padding
# first NIC: LAN (br-lan, 192.168.1.1, where dropbear is reachable); second: WAN (DHCP, opkg)
qemu-system-x86_64 -m 512 -nographic -drive "file=$work/$image,format=raw,if=virtio" \
	-netdev user,id=lan,net=192.168.1.0/24,host=192.168.1.2,hostfwd=tcp::2222-192.168.1.1:22 \
	-device virtio-net-pci,netdev=lan \
	-netdev user,id=wan -device virtio-net-pci,netdev=wan >"$work/console.log" 2>&1 &
qemu=$!
trap 'kill $qemu 2>/dev/null || true' EXIT

ssh_() { ssh -p 2222 -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null root@127.0.0.1 "$@"; }
for _ in $(seq 60); do
	if ssh_ true 2>/dev/null; then break; fi
	sleep 5
done
ssh_ true

for pkg in "$pkgdir"/*.ipk; do
	name=$(basename "$pkg")
	ssh_ "cat > /tmp/$name" <"$pkg"
done
ssh_ 'opkg update && opkg install /tmp/*.ipk'
ssh_ '/etc/init.d/acp enable && /etc/init.d/acp start'
sleep 10
ssh_ 'ubus call acp status' | tee "$work/status.json"
grep -q '"version"' "$work/status.json"
ssh_ '/etc/init.d/acp stop'
sleep 5
left=$(ssh_ 'ip netns list' || true)
if [ -n "$left" ]; then
	echo "namespaces left after stop: $left" >&2
	exit 1
fi
echo "openwrt-qemu-check: ok"
