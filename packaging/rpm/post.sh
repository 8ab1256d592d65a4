# $1: 1 on install, 2 on upgrade. Place the hook in libvirt's qemu.d as `vgpuctl install` does
# (an operator's own /etc/libvirt/hooks/qemu is never touched), reload the daemon, and set the
# units up by preset.
/usr/bin/vgpuctl install --hook-binary /usr/lib/vgpu-hook/vgpu-hook ||
    echo "vgpu-hook: the hook could not be placed; run: vgpuctl install --hook-binary /usr/lib/vgpu-hook/vgpu-hook" >&2
if [ -x /usr/sbin/restorecon ]; then
    /usr/sbin/restorecon -F /etc/libvirt/hooks/qemu.d/50-vgpu-hook >/dev/null 2>&1 || :
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" = 1 ]; then
        systemctl preset vgpu-hook-boot.service vgpu-hook-metrics.timer >/dev/null 2>&1 || :
    fi
fi
exit 0
