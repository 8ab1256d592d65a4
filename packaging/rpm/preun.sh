# $1: 0 on removal, 1 on upgrade. On removal take the hook out of qemu.d first (only ours).
if [ "$1" = 0 ]; then
    if [ -d /run/systemd/system ]; then
        systemctl --no-reload disable --now vgpu-hook-metrics.timer vgpu-hook-boot.service >/dev/null 2>&1 || :
    fi
    /usr/bin/vgpuctl uninstall ||
        { cmp -s /usr/lib/vgpu-hook/vgpu-hook /etc/libvirt/hooks/qemu.d/50-vgpu-hook &&
              rm -f /etc/libvirt/hooks/qemu.d/50-vgpu-hook; }
fi
exit 0
