// libsystemd's daemon API (sd_notify, sd_watchdog_enabled, sd_listen_fds_with_names, sd_is_socket_unix) and the
// journal API (sd_journal_sendv to write, sd_journal_open/next/get_data to read). Debian: libsystemd-dev.
#ifndef EDGED_CSYSTEMD_SHIM_H
#define EDGED_CSYSTEMD_SHIM_H
#include <sys/uio.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-journal.h>
#endif
