// libsystemd: sd_notify for Type=notify services.
#ifndef PGSWIFT_CSYSTEMD_SHIM_H
#define PGSWIFT_CSYSTEMD_SHIM_H
#include <systemd/sd-daemon.h>
#endif
