// SPDX-License-Identifier: Apache-2.0
// One process acting on another, for the `process_access` sensor (win_process_open_events,
// win_remote_thread_events): ptrace requests that attach or modify, process_vm_readv /
// process_vm_writev, and opens of /proc/<pid>/mem, from their own syscall tracepoints (not a
// generic sys_enter hook, which would cost every syscall). Reported at syscall entry: attempts,
// including refused ones. The open hooks run for every openat: they read at most 32 bytes of
// the path and keep only `/proc/<digits>/mem` of another process, so nothing else leaves the
// kernel.
// The record layout is mirrored in src/linux/process_access.rs.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

#define ACCESS_PTRACE 1
#define ACCESS_VM_READ 2
#define ACCESS_VM_WRITE 3
#define ACCESS_PROC_MEM 4

#define PTRACE_POKETEXT 4
#define PTRACE_POKEDATA 5
#define PTRACE_POKEUSR 6
#define PTRACE_SETREGS 13
#define PTRACE_ATTACH 16
#define PTRACE_SETREGSET 0x4205
#define PTRACE_SEIZE 0x4206
#define NT_PRSTATUS 1
// Offset of `rip` in x86_64's struct user_regs_struct.
#define USER_REGS_RIP 128

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1024 * 1024);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u64);
} lost SEC(".maps");

struct access_event {
	u32 kind;
	u32 pid;             // caller's thread group id
	u32 uid;             // caller's effective uid
	u32 target;          // the pid argument, as given (may be a thread id)
	u64 start_boottime;  // caller's group leader start, ns since boot
	u64 request;         // ptrace request; open flags & O_ACCMODE for /proc/PID/mem; else 0
	u64 address;         // the target address written or jumped to, 0 when none
	u64 exec_id;         // caller's self_exec_id: +1 at every exec, inherited by fork
};

static __always_inline int submit(u32 kind, u32 target, u64 request, u64 address)
{
	struct access_event *event = bpf_ringbuf_reserve(&events, sizeof(*event), 0);
	if (!event) {
		u32 key = 0;
		u64 *value = bpf_map_lookup_elem(&lost, &key);
		if (value)
			__sync_fetch_and_add(value, 1);
		return 0;
	}
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	event->kind = kind;
	event->pid = bpf_get_current_pid_tgid() >> 32;
	event->uid = BPF_CORE_READ(task, cred, euid.val);
	event->target = target;
	event->start_boottime = BPF_CORE_READ(task, group_leader, start_boottime);
	event->request = request;
	event->address = address;
	event->exec_id = BPF_CORE_READ(task, self_exec_id);
	bpf_ringbuf_submit(event, 0);
	return 0;
}

// The instruction pointer a register write sets, read from the caller's buffer (x86_64).
static __always_inline u64 new_instruction_pointer(u64 request, u64 addr, u64 data)
{
	u64 rip = 0;
#if defined(__TARGET_ARCH_x86)
	const void *regs = (const void *)data;
	if (request == PTRACE_SETREGSET) {
		if (addr != NT_PRSTATUS)
			return 0;
		struct iovec vec = {};
		if (bpf_probe_read_user(&vec, sizeof(vec), (const void *)data) != 0)
			return 0;
		regs = vec.iov_base;
	}
	bpf_probe_read_user(&rip, sizeof(rip), regs + USER_REGS_RIP);
#endif
	return rip;
}

SEC("tracepoint/syscalls/sys_enter_ptrace")
int handle_ptrace(struct trace_event_raw_sys_enter *ctx)
{
	u64 request = ctx->args[0];
	u32 target = ctx->args[1];
	u64 addr = ctx->args[2];
	u64 data = ctx->args[3];
	switch (request) {
	case PTRACE_ATTACH:
	case PTRACE_SEIZE:
		return submit(ACCESS_PTRACE, target, request, 0);
	case PTRACE_POKETEXT:
	case PTRACE_POKEDATA:
		return submit(ACCESS_PTRACE, target, request, addr);
	case PTRACE_POKEUSR:
		return submit(ACCESS_PTRACE, target, request, 0);
	case PTRACE_SETREGS:
	case PTRACE_SETREGSET:
		return submit(ACCESS_PTRACE, target, request, new_instruction_pointer(request, addr, data));
	default:
		return 0;
	}
}

// process_vm_readv/writev(pid, local_iov, liovcnt, remote_iov, riovcnt, flags): the first
// remote iovec says where in the target.
static __always_inline int handle_vm(struct trace_event_raw_sys_enter *ctx, u32 kind)
{
	struct iovec remote = {};
	bpf_probe_read_user(&remote, sizeof(remote), (const void *)ctx->args[3]);
	return submit(kind, ctx->args[0], 0, (u64)remote.iov_base);
}

SEC("tracepoint/syscalls/sys_enter_process_vm_readv")
int handle_vm_readv(struct trace_event_raw_sys_enter *ctx)
{
	return handle_vm(ctx, ACCESS_VM_READ);
}

SEC("tracepoint/syscalls/sys_enter_process_vm_writev")
int handle_vm_writev(struct trace_event_raw_sys_enter *ctx)
{
	return handle_vm(ctx, ACCESS_VM_WRITE);
}

// "/proc/" + 1 to 10 digits + "/mem" + NUL is 12 to 21 bytes.
#define PROC_MEM_MIN 12
#define PROC_MEM_MAX 21
#define O_ACCMODE 3

// The pid of a `/proc/<digits>/mem` path (absolute, as given), else 0.
static __always_inline u32 proc_mem_target(const char *user_path)
{
	char path[32] = {};
	long length = bpf_probe_read_user_str(path, sizeof(path), user_path);
	if (length < PROC_MEM_MIN || length > PROC_MEM_MAX)
		return 0;
	if (path[0] != '/' || path[1] != 'p' || path[2] != 'r' || path[3] != 'o' || path[4] != 'c' ||
	    path[5] != '/')
		return 0;
	u32 pid = 0;
	int end = 6;
	for (int i = 6; i < 16; i++) {
		char c = path[i];
		if (c < '0' || c > '9')
			break;
		pid = pid * 10 + (c - '0');
		end = i + 1;
	}
	if (end == 6 || end > 16)
		return 0;
	if (path[end] != '/' || path[end + 1] != 'm' || path[end + 2] != 'e' || path[end + 3] != 'm' ||
	    path[end + 4] != 0)
		return 0;
	return pid;
}

static __always_inline int handle_open(const char *user_path, u64 flags)
{
	u32 target = proc_mem_target(user_path);
	// The caller's own memory (by number; /proc/self is not digits) is no access to another.
	if (target == 0 || target == (u32)(bpf_get_current_pid_tgid() >> 32))
		return 0;
	return submit(ACCESS_PROC_MEM, target, flags & O_ACCMODE, 0);
}

// openat(dfd, filename, flags, mode)
SEC("tracepoint/syscalls/sys_enter_openat")
int handle_openat(struct trace_event_raw_sys_enter *ctx)
{
	return handle_open((const char *)ctx->args[1], ctx->args[2]);
}

// openat2(dfd, filename, struct open_how *how, size): flags is the first field of open_how.
SEC("tracepoint/syscalls/sys_enter_openat2")
int handle_openat2(struct trace_event_raw_sys_enter *ctx)
{
	u64 flags = 0;
	bpf_probe_read_user(&flags, sizeof(flags), (const void *)ctx->args[2]);
	return handle_open((const char *)ctx->args[1], flags);
}
