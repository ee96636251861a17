/* vitte/vitte.h — every public header of libvitte. */
#ifndef VITTE_VITTE_H
#define VITTE_VITTE_H

#include "vitte/base.h"
#include "vitte/sched.h"
#include "vitte/async.h"
#include "vitte/task.h"
#include "vitte/flow.h"

#define VITTE_VERSION_MAJOR 0
#define VITTE_VERSION_MINOR 1
#define VITTE_VERSION_PATCH 0

#endif
