// SPDX-License-Identifier: Apache-2.0
// Process lifecycle for the `process` sensor (win_process_events and the process cache):
// exec, exit and fork of processes, as fixed-layout records in a ring buffer. Deliberately
// dumb: the kernel side copies what is gone after the fact (filename, argv, ids, start times);
// userspace does everything else. Record layouts are mirrored in src/linux/process_events.rs.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

#define EVENT_EXEC 1
#define EVENT_EXIT 2
#define EVENT_FORK 3

#define FILENAME_MAX_BYTES 4096
#define ARGS_MAX_BYTES 4096

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 * 1024 * 1024);
} events SEC(".maps");

// Slot 0: records that did not fit in the ring buffer (userspace reads and reports it).
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u64);
} lost SEC(".maps");

// Common head of every record.
struct event_header {
	u32 kind;
	u32 pid;             // thread group id
	u32 ppid;            // real parent's thread group id
	u32 uid;             // effective uid
	u64 start_boottime;  // group leader's start, ns since boot (as /proc/PID/stat's starttime)
	u64 parent_start_boottime;
	u64 exec_id;         // the task's self_exec_id: +1 at every exec, inherited by fork
};

struct exec_event {
	struct event_header header;
	u32 filename_len;    // bytes copied incl. the NUL, 0 when unreadable
	u32 args_len;        // bytes of argv copied (NUL-separated)
	u32 args_truncated;  // 1 when argv was longer than ARGS_MAX_BYTES
	u32 pad;
	char filename[FILENAME_MAX_BYTES];
	char args[ARGS_MAX_BYTES];
};

struct exit_event {
	struct event_header header;
	s32 exit_code;       // as wait(2) reports it
	u32 pad;
};

// For fork: `header` describes the child.
struct fork_event {
	struct event_header header;
};

static __always_inline void count_lost(void)
{
	u32 key = 0;
	u64 *value = bpf_map_lookup_elem(&lost, &key);
	if (value)
		__sync_fetch_and_add(value, 1);
}

static __always_inline void fill_header(struct event_header *header, u32 kind, struct task_struct *task)
{
	struct task_struct *leader = BPF_CORE_READ(task, group_leader);
	struct task_struct *parent = BPF_CORE_READ(task, real_parent);
	header->kind = kind;
	header->pid = BPF_CORE_READ(task, tgid);
	header->ppid = BPF_CORE_READ(parent, tgid);
	header->uid = BPF_CORE_READ(task, cred, euid.val);
	header->start_boottime = BPF_CORE_READ(leader, start_boottime);
	header->parent_start_boottime = BPF_CORE_READ(parent, group_leader, start_boottime);
	header->exec_id = BPF_CORE_READ(task, self_exec_id);
}

// Fork and exit records wake the reader only once records have piled up (1/64 of the ring):
// it polls at least every 50 ms anyway, so they wait at most that long, and under load one
// wakeup carries many of them. Exec records keep the kernel's default (wake a reader that has
// caught up): other sensors attribute their events through the process cache and wait for the
// exec of a new process, so it must arrive at once. Measured in the exec storm: a wakeup per
// record cost the agent more CPU than decoding the records.
#define WAKEUP_BYTES (256 * 1024)

static __always_inline u64 wakeup_flag(void)
{
	return bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= WAKEUP_BYTES ? BPF_RB_FORCE_WAKEUP
									       : BPF_RB_NO_WAKEUP;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(handle_exec, struct task_struct *task, pid_t old_pid, struct linux_binprm *bprm)
{
	struct exec_event *event = bpf_ringbuf_reserve(&events, sizeof(*event), 0);
	if (!event) {
		count_lost();
		return 0;
	}
	fill_header(&event->header, EVENT_EXEC, task);
	event->pad = 0;

	// `interp` is the file actually run (the interpreter for a script), as /proc/PID/exe shows;
	// it equals `filename` for a plain binary. Either may be relative to the cwd.
	const char *interp = BPF_CORE_READ(bprm, interp);
	long copied = bpf_probe_read_kernel_str(event->filename, sizeof(event->filename), interp);
	event->filename_len = copied > 0 ? copied : 0;

	struct mm_struct *mm = BPF_CORE_READ(task, mm);
	unsigned long arg_start = BPF_CORE_READ(mm, arg_start);
	unsigned long arg_end = BPF_CORE_READ(mm, arg_end);
	unsigned long length = arg_end > arg_start ? arg_end - arg_start : 0;
	event->args_truncated = length > ARGS_MAX_BYTES;
	if (length > ARGS_MAX_BYTES)
		length = ARGS_MAX_BYTES;
	// The new stack was just written by execve, so its pages are present.
	if (length > 0 && bpf_probe_read_user(event->args, length, (const void *)arg_start) == 0)
		event->args_len = length;
	else
		event->args_len = 0;

	bpf_ringbuf_submit(event, 0);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(handle_exit, struct task_struct *task)
{
	// Only the last thread of a process: do_exit() decrements signal->live before this
	// tracepoint, so 0 means the whole thread group is gone. (Read instead of the tracepoint's
	// `group_dead` argument, which older kernels do not have.)
	if (BPF_CORE_READ(task, signal, live.counter) != 0)
		return 0;
	struct exit_event *event = bpf_ringbuf_reserve(&events, sizeof(*event), 0);
	if (!event) {
		count_lost();
		return 0;
	}
	fill_header(&event->header, EVENT_EXIT, task);
	event->exit_code = BPF_CORE_READ(task, signal, group_exit_code) ?: BPF_CORE_READ(task, exit_code);
	event->pad = 0;
	bpf_ringbuf_submit(event, wakeup_flag());
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(handle_fork, struct task_struct *parent, struct task_struct *child)
{
	// New threads are not new processes.
	if (BPF_CORE_READ(child, pid) != BPF_CORE_READ(child, tgid))
		return 0;
	struct fork_event *event = bpf_ringbuf_reserve(&events, sizeof(*event), 0);
	if (!event) {
		count_lost();
		return 0;
	}
	fill_header(&event->header, EVENT_FORK, child);
	bpf_ringbuf_submit(event, wakeup_flag());
	return 0;
}
