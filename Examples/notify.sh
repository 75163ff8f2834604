#!/bin/sh
# A notify script for vrrp_instance / vrrp_sync_group: keepalived's four arguments.
#   notify /etc/keepstate/notify.sh
# $1: INSTANCE or GROUP   $2: its name   $3: MASTER, BACKUP, FAULT or STOP   $4: priority
# Keepstate runs it without waiting for it, in order per group, with a timeout.
logger -t keepstate-notify "$1 $2 is now $3 (priority ${4:-?})"
case "$3" in
    MASTER) ;;   # e.g. start a service that must only run on the master
    BACKUP|FAULT|STOP) ;;
esac
exit 0
