#!/bin/sh
# The differential script: one fixed sequence of sysfs writes against an mdev parent and an SR-IOV
# physical function, printing what each write returned and what the tree looks like afterwards.
# It runs against the real kernel in the e2e guest (ROOT=/, the mtty sample parent, QEMU's NVMe PF)
# and against the simulator (ROOT=its mount point, a host file modelled on that guest); the two
# transcripts are compared line by line (see README.md in this directory).
#
# usage: ops.sh ROOT PARENT PF
#   ROOT    the directory holding sys/ (/ on a real host)
#   PARENT  an mdev parent with two types (mtty: mtty-1, mtty-2) and no mdevs yet
#   PF      an SR-IOV PF (0000:01:00.0) with VFs enabled, bound to a driver that can change them
#
# Output: one line per fact, each starting with its two-digit step number:
#   NN <operation> -> ok|<ERRNO>      what the write returned (an open that failed counts too)
#   NN mdevs <uuid>:<type> ...        the parent's mdevs and their mdev_type (- when none)
#   NN bus <uuid> ...                 /sys/bus/mdev/devices (- when empty)
#                                     the script's own UUIDs, d1ff0000-0000-4000-8000-<12 digits>,
#                                     are shown as those digits without leading zeros (1, 10, ab)
#   NN avail <type>=<n> ...           available_instances of every type of the parent
#   NN sriov numvfs=<n> <virtfnI>=<VF address> ...
# Writes go through perl (essential on Debian, so present in the guest too) because a shell
# redirection reports failures as locale- and shell-specific text; perl gives the errno itself.
# The open is the shell's (`echo VALUE > FILE`: O_WRONLY|O_CREAT|O_TRUNC), the value one write(2).
set -eu
export LC_ALL=C

[ $# = 3 ] || { echo "usage: ops.sh ROOT PARENT PF" >&2; exit 2; }
SYS=${1%/}/sys
PARENT=$2
PF=$3
PARENT_DIR=$SYS/class/mdev_bus/$PARENT
TYPES_DIR=$PARENT_DIR/mdev_supported_types
PF_DIR=$SYS/bus/pci/devices/$PF
[ -d "$TYPES_DIR" ] || { echo "ops.sh: $TYPES_DIR: no such mdev parent" >&2; exit 2; }
[ -f "$PF_DIR/sriov_numvfs" ] || { echo "ops.sh: $PF_DIR: not an SR-IOV PF" >&2; exit 2; }

# the parent's two types, in name order (mtty-1 takes one port of the shared pool, mtty-2 two)
# shellcheck disable=SC2012
T1=$(ls "$TYPES_DIR" | sed -n 1p)
# shellcheck disable=SC2012
T2=$(ls "$TYPES_DIR" | sed -n 2p)
[ -n "$T2" ] || { echo "ops.sh: $PARENT has fewer than two types" >&2; exit 2; }

# write FILE VALUE [-n]: echo VALUE > FILE (-n: echo -n, without the newline); prints ok or the
# errno's name
write() {
    perl -e '
        my ($file, $value, $raw) = @ARGV;
        $value .= "\n" unless defined $raw;
        sub errno {
            my @names = grep { $!{$_} } keys %!;
            @names = sort @names;    # one name for aliases (EAGAIN, not EWOULDBLOCK)
            print((@names ? $names[0] : "errno-" . ($! + 0)), "\n");
            exit 0;
        }
        open(my $fh, ">", $file) or errno();
        defined(syswrite($fh, $value)) or errno();
        close($fh) or errno();
        print "ok\n";
    ' -- "$@"
}

STEP=0
# step DESCRIPTION FILE VALUE [-n]: the next step: do the write, print its result
step() {
    STEP=$((STEP + 1))
    N=$(printf '%02d' "$STEP")
    d=$1; shift
    echo "$N $d -> $(write "$@")"
}
# a step that is not one write: its description and outcome as given
step_text() {
    STEP=$((STEP + 1))
    N=$(printf '%02d' "$STEP")
    echo "$N $1"
}
# words, or - when there are none
words() { if [ $# = 0 ]; then echo -; else echo "$*"; fi; }

PREFIX=d1ff0000-0000-4000-8000-
uuid() { printf '%s%012d' "$PREFIX" "$1"; }
# label UUID: sets LABEL to the short name of one of our UUIDs, or to any other UUID in full
# (without a subshell: under TCG every fork counts)
label() {
    case $1 in
        "$PREFIX"*)
            LABEL=${1#"$PREFIX"}
            while [ "${LABEL#0}" != "$LABEL" ] && [ -n "${LABEL#0}" ]; do LABEL=${LABEL#0}; done ;;
        *) LABEL=$1 ;;
    esac
}
mdevs() {
    out=""
    for t in "$PARENT_DIR"/*/mdev_type; do
        [ -L "$t" ] || continue
        d=${t%/mdev_type}
        l=$(readlink "$t")
        label "${d##*/}"
        out="$out $LABEL:${l##*/}"
    done
    # shellcheck disable=SC2086
    words $out
}
bus_mdevs() {
    out=""
    for d in "$SYS"/bus/mdev/devices/*; do
        [ -e "$d" ] || [ -L "$d" ] || continue
        label "${d##*/}"
        out="$out $LABEL"
    done
    # shellcheck disable=SC2086
    words $out
}
avail_of() { cat "$TYPES_DIR/$1/available_instances"; }
avail() {
    out=""
    for t in "$TYPES_DIR"/*/; do
        t=${t%/}
        out="$out ${t##*/}=$(avail_of "${t##*/}")"
    done
    echo "${out# }"
}
sriov() {
    out="numvfs=$(cat "$PF_DIR/sriov_numvfs")"
    # virtfn0..virtfnN-1 in numeric order (a glob would put virtfn10 before virtfn2)
    i=0
    while [ -L "$PF_DIR/virtfn$i" ]; do
        l=$(readlink "$PF_DIR/virtfn$i")
        out="$out virtfn$i=${l##*/}"
        i=$((i + 1))
    done
    echo "$out"
}
show_mdev() {
    echo "$N mdevs $(mdevs)"
    echo "$N bus $(bus_mdevs)"
    echo "$N avail $(avail)"
}
show_sriov() { echo "$N sriov $(sriov)"; }

create() { step "create $1 $2" "$TYPES_DIR/$1/create" "$2"; show_mdev; }
# create without the newline
create_n() { step "create $1 $2 (no newline)" "$TYPES_DIR/$1/create" "$2" -n; show_mdev; }
remove() { step "remove $1 with $2" "$SYS/bus/mdev/devices/$1/remove" "$2"; show_mdev; }
# fill TYPE FIRST: create TYPE devices (UUIDs FIRST, FIRST+1, ...) until one is refused; one step
# that tells how many were accepted, what refused the next, and available_instances after each
fill() {
    accepted=0 k=$2 seen="" r=ok
    while [ $accepted -lt 64 ]; do
        r=$(write "$TYPES_DIR/$1/create" "$(uuid "$k")")
        [ "$r" = ok ] || break
        accepted=$((accepted + 1)) k=$((k + 1))
        seen="$seen $(avail | tr ' ' ',')"
    done
    step_text "fill $1 until refused -> $accepted ok then $r"
    echo "$N avail-during-fill$seen"
    show_mdev
}

step_text "initial state"
show_mdev
show_sriov

# ---------------------------------------------------------------- mdev create
A=$(uuid 1)
create "$T2" "$A"
create "$T2" "$A"                               # the same UUID again
create "$T1" "$A"                               # the same UUID on the other type
create "$T2" "not-a-uuid"
create "$T2" "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz"  # UUID-sized, not hex
create "$T2" "$(uuid 2)0"                        # 37 characters and the newline
create_n "$T2" "$(uuid 2)0"                      # 37 bytes: only the first 36 are parsed
create_n "$T2" "$(uuid 4)"                       # 36 bytes, no newline
create "$T2" "D1FF0000-0000-4000-8000-0000000000AB"  # upper case: accepted, named in lower case
create "$T1" "$(uuid 3)"                         # mtty: 9 of the 24 ports taken, an odd number left
fill "$T2" 10
fill "$T1" 40

# ---------------------------------------------------------------- mdev remove
remove "$A" 1
remove "$A" 1                                   # gone: the remove file no longer exists
remove "$(uuid 3)" 0                            # 0: nothing happens
remove "$(uuid 3)" abc
remove "$(uuid 3)" 0x1                          # parsed like kstrtoul: hex is a number
create "$T1" "$A"                               # a removed UUID can be used again
removed=0
for d in "$PARENT_DIR"/*/remove; do
    [ -f "$d" ] || continue
    if [ "$(write "$d" 1)" = ok ]; then removed=$((removed + 1)); fi
done
step_text "remove every mdev of $PARENT -> $removed ok"
show_mdev

# ---------------------------------------------------------------- SR-IOV
NUMVFS=$(cat "$PF_DIR/sriov_numvfs")
TOTAL=$(cat "$PF_DIR/sriov_totalvfs")
[ "$NUMVFS" -gt 0 ] || { echo "ops.sh: $PF has no VFs enabled" >&2; exit 2; }
if [ "$NUMVFS" -gt 1 ]; then OTHER=$((NUMVFS - 1)); else OTHER=2; fi
numvfs() { step "sriov_numvfs $1$2" "$PF_DIR/sriov_numvfs" "$1"; show_sriov; }
numvfs "$NUMVFS" " (the current count)"
numvfs "$OTHER" " (another count while VFs are enabled)"
numvfs "$((TOTAL + 1))" " (sriov_totalvfs + 1)"
numvfs 65536 " (not a u16)"
numvfs abc ""
numvfs -1 ""
numvfs 0 ""
numvfs 0 " (the current count)"
numvfs "$NUMVFS" ""
