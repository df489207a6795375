// SPDX-License-Identifier: GPL-2.0
// Network socket hooks (stub: being written).
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";
