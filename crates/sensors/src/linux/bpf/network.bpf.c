// SPDX-License-Identifier: GPL-2.0
// Socket events for the `network` sensor (win_socket_events), and the socket -> process
// attribution its packet capture relies on. Every record names the process that owns the
// socket, taken in that process's own context (syscall or socket hook), never in softirq:
// - TCP (tp_btf/inet_sock_set_state): CLOSE -> SYN_SENT remembers the connecting process
//   (connect() runs it), SYN_SENT -> ESTABLISHED reports Connect for it, -> LISTEN reports
//   Listen, -> CLOSE reports Close for a socket reported before. Accept comes from the exit of
//   accept()/accept4(): the new descriptor's socket, in the accepting process.
// - Each TCP record that tp_btf could miss is also taken from a second place: the kernel skips
//   a tracing program raised on a CPU where it is already running (counted as recursion
//   misses), which happens when a softirq delivering packets interrupts it; the transitions
//   raised in process context (SYN_SENT, LISTEN, CLOSE on close()) cannot be skipped that way.
//   So Connect also comes from the return of a blocking connect() or, failing that, from the
//   release of an established socket, and Close also from the release of the socket (cgroup
//   sock_release); whichever place comes first reports: Connect once per socket (a
//   compare-and-swap on its owner entry), Close by the place that deletes the entry.
// - UDP, where a remote is known: connect() (exit tracepoint; the local port is bound by then),
//   sendto()/sendmsg() with an address (cgroup sendmsg4/6) report Connect, receiving from a
//   new peer (cgroup recvmsg4/6) reports Accept, once per socket and peer; the release of such
//   a socket (cgroup sock_release) reports Close.
// The record layout is mirrored in src/linux/network/events.rs.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>

#define AF_INET 2
#define AF_INET6 10
#define PROTO_TCP 6
#define PROTO_UDP 17

#define ACTION_CONNECT 1
#define ACTION_ACCEPT 2
#define ACTION_LISTEN 3
#define ACTION_CLOSE 4

char LICENSE[] SEC("license") = "GPL";

// The agent's own process: its sockets are not reported (set before load).
const volatile u32 agent_pid = 0;

struct socket_event {
	u8 action;
	u8 protocol;
	u16 family;
	u32 pid;             // owner's thread group id
	u64 start_boottime;  // owner's group leader start, ns since boot; 0 when unknown
	u16 local_port;      // host order
	u16 remote_port;     // host order
	u32 exec_id;         // owner's self_exec_id (low 32 bits) when start_boottime is known
	u8 local_addr[16];   // IPv4: first 4 bytes, network order
	u8 remote_addr[16];
};

// What is remembered of a socket: the process it belongs to, whether it was reported (a Close
// follows only then), and a generation that tells apart sockets reusing a freed address.
struct owner {
	struct socket_event event;
	u64 generation;
	u32 connect_reported; // 0, then 1 once a Connect was submitted (compare-and-swap)
	u32 reserved;
	u64 sk; // the socket's address, for reading it where the context hides its fields
};

struct udp_peer {
	u64 sk;
	u64 generation;
	u8 addr[16];
	u32 port;
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 * 1024 * 1024);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u64);
} lost SEC(".maps");

// struct sock address -> owner.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 131072);
	__type(key, u64);
	__type(value, struct owner);
} owners SEC(".maps");

// UDP (socket, peer) pairs already reported.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 131072);
	__type(key, struct udp_peer);
	__type(value, u8);
} udp_peers SEC(".maps");

// Thread -> descriptor of the connect() it is in.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, u64);
	__type(value, u32);
} connecting SEC(".maps");

static __always_inline void submit(const struct socket_event *event)
{
	if (bpf_ringbuf_output(&events, (void *)event, sizeof(*event), 0) != 0) {
		u32 key = 0;
		u64 *value = bpf_map_lookup_elem(&lost, &key);
		if (value)
			__sync_fetch_and_add(value, 1);
	}
}

// The calling process as owner (tracing programs only: cgroup programs have no task access).
static __always_inline void set_current_task(struct socket_event *event)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	event->pid = bpf_get_current_pid_tgid() >> 32;
	event->start_boottime = BPF_CORE_READ(task, group_leader, start_boottime);
	event->exec_id = BPF_CORE_READ(task, self_exec_id);
}

static __always_inline void read_addresses(const struct sock *sk, struct socket_event *event)
{
	u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	event->family = family;
	event->local_port = BPF_CORE_READ(sk, __sk_common.skc_num);
	event->remote_port = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (family == AF_INET) {
		u32 local = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
		u32 remote = BPF_CORE_READ(sk, __sk_common.skc_daddr);
		__builtin_memcpy(event->local_addr, &local, 4);
		__builtin_memcpy(event->remote_addr, &remote, 4);
	} else {
		BPF_CORE_READ_INTO(&event->local_addr, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
		BPF_CORE_READ_INTO(&event->remote_addr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
	}
}

static __always_inline int is_inet(u16 family)
{
	return family == AF_INET || family == AF_INET6;
}

static __always_inline void remember(u64 sk, const struct socket_event *event)
{
	struct owner owner = {};
	owner.event = *event;
	owner.generation = bpf_ktime_get_ns();
	owner.sk = sk;
	bpf_map_update_elem(&owners, &sk, &owner, BPF_ANY);
}

// Reports Connect for TCP socket `sk` once established, with the owner remembered at
// SYN_SENT; the first of the two callers to get here reports.
static __always_inline void report_connect(const struct sock *sk)
{
	u64 key = (u64)sk;
	struct owner *owner = bpf_map_lookup_elem(&owners, &key);
	if (!owner)
		return;
	if (__sync_val_compare_and_swap(&owner->connect_reported, 0, 1) != 0)
		return;
	struct socket_event event = owner->event;
	event.action = ACTION_CONNECT;
	read_addresses(sk, &event);
	owner->event = event;
	submit(&event);
}

// Reports Close for socket `key` if it was reported before; only the caller whose delete
// removed the entry reports, so the two places that see a close never both do.
static __always_inline void report_close(u64 key)
{
	struct owner *owner = bpf_map_lookup_elem(&owners, &key);
	if (!owner)
		return;
	struct socket_event event = owner->event;
	if (bpf_map_delete_elem(&owners, &key) != 0)
		return;
	if (event.action == 0)
		return; // a connect that never completed
	event.action = ACTION_CLOSE;
	submit(&event);
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(handle_tcp_state, const struct sock *sk, const int oldstate, const int newstate)
{
	if (BPF_CORE_READ(sk, sk_protocol) != PROTO_TCP)
		return 0;
	if (!is_inet(BPF_CORE_READ(sk, __sk_common.skc_family)))
		return 0;
	u64 key = (u64)sk;
	struct socket_event event = {};
	if (newstate == TCP_SYN_SENT) {
		// connect(), in the connecting process; addresses are complete only once established.
		set_current_task(&event);
		if (event.pid == agent_pid)
			return 0;
		event.protocol = PROTO_TCP;
		remember(key, &event);
	} else if (newstate == TCP_LISTEN) {
		set_current_task(&event);
		if (event.pid == agent_pid)
			return 0;
		event.protocol = PROTO_TCP;
		event.action = ACTION_LISTEN;
		read_addresses(sk, &event);
		remember(key, &event);
		submit(&event);
	} else if (newstate == TCP_ESTABLISHED && oldstate == TCP_SYN_SENT) {
		// Often in softirq (the SYN-ACK arriving): the owner is the one remembered.
		report_connect(sk);
	} else if (newstate == TCP_CLOSE) {
		report_close(key);
	}
	return 0;
}

// The socket behind descriptor `fd` of the calling process, or NULL.
static __always_inline const struct sock *socket_of_descriptor(long fd)
{
	if (fd < 0)
		return NULL;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *table = BPF_CORE_READ(task, files, fdt);
	if (!table || fd >= BPF_CORE_READ(table, max_fds))
		return NULL;
	struct file **files = BPF_CORE_READ(table, fd);
	struct file *file = NULL;
	bpf_probe_read_kernel(&file, sizeof(file), &files[fd]);
	if (!file)
		return NULL;
	struct socket *socket = (struct socket *)BPF_CORE_READ(file, private_data);
	if (!socket)
		return NULL;
	return BPF_CORE_READ(socket, sk);
}

static __always_inline int on_accept(long fd)
{
	const struct sock *sk = socket_of_descriptor(fd);
	if (!sk || BPF_CORE_READ(sk, sk_protocol) != PROTO_TCP)
		return 0;
	if (!is_inet(BPF_CORE_READ(sk, __sk_common.skc_family)))
		return 0;
	struct socket_event event = {};
	set_current_task(&event);
	if (event.pid == agent_pid)
		return 0;
	event.protocol = PROTO_TCP;
	event.action = ACTION_ACCEPT;
	read_addresses(sk, &event);
	remember((u64)sk, &event);
	submit(&event);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept")
int handle_exit_accept(struct trace_event_raw_sys_exit *ctx)
{
	return on_accept(ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int handle_exit_accept4(struct trace_event_raw_sys_exit *ctx)
{
	return on_accept(ctx->ret);
}

// Reports `event` for socket `sk` the first time the socket meets this peer.
static __always_inline void note_udp_peer(u64 sk, struct socket_event *event)
{
	struct owner *owner = bpf_map_lookup_elem(&owners, &sk);
	u64 generation;
	if (owner) {
		generation = owner->generation;
	} else {
		remember(sk, event);
		owner = bpf_map_lookup_elem(&owners, &sk);
		if (!owner)
			return;
		generation = owner->generation;
	}
	struct udp_peer peer = {};
	peer.sk = sk;
	peer.generation = generation;
	__builtin_memcpy(peer.addr, event->remote_addr, 16);
	peer.port = event->remote_port;
	u8 seen = 1;
	if (bpf_map_update_elem(&udp_peers, &peer, &seen, BPF_NOEXIST) != 0)
		return;
	owner->event = *event;
	submit(event);
}

SEC("tracepoint/syscalls/sys_enter_connect")
int handle_enter_connect(struct trace_event_raw_sys_enter *ctx)
{
	u64 id = bpf_get_current_pid_tgid();
	if ((id >> 32) == agent_pid)
		return 0;
	u32 fd = ctx->args[0];
	bpf_map_update_elem(&connecting, &id, &fd, BPF_ANY);
	return 0;
}

// connect() returning: for UDP the remote is set and the local port bound by now; for TCP a
// blocking connect() that returns 0 is established (the second place Connect comes from).
SEC("tracepoint/syscalls/sys_exit_connect")
int handle_exit_connect(struct trace_event_raw_sys_exit *ctx)
{
	u64 id = bpf_get_current_pid_tgid();
	u32 *fd = bpf_map_lookup_elem(&connecting, &id);
	if (!fd)
		return 0;
	long descriptor = *fd;
	bpf_map_delete_elem(&connecting, &id);
	if (ctx->ret != 0)
		return 0;
	const struct sock *sk = socket_of_descriptor(descriptor);
	if (!sk || !is_inet(BPF_CORE_READ(sk, __sk_common.skc_family)))
		return 0;
	u16 protocol = BPF_CORE_READ(sk, sk_protocol);
	if (protocol == PROTO_TCP) {
		report_connect(sk);
		return 0;
	}
	if (protocol != PROTO_UDP)
		return 0;
	struct socket_event event = {};
	set_current_task(&event);
	event.protocol = PROTO_UDP;
	event.action = ACTION_CONNECT;
	read_addresses(sk, &event);
	if (event.remote_port == 0)
		return 0; // connect(AF_UNSPEC): dissolved, not connected
	note_udp_peer((u64)sk, &event);
	return 0;
}

// A UDP socket meeting the peer named by a cgroup sock_addr hook (IPv4): `action` is Connect
// for sending, Accept for receiving.
static __always_inline int on_udp4(struct bpf_sock_addr *ctx, u8 action)
{
	struct bpf_sock *sk = ctx->sk;
	if (!sk || ctx->protocol != PROTO_UDP)
		return 1;
	u32 pid = bpf_get_current_pid_tgid() >> 32;
	if (pid == agent_pid)
		return 1;
	struct socket_event event = {};
	event.action = action;
	event.protocol = PROTO_UDP;
	event.family = AF_INET;
	event.pid = pid;
	event.remote_port = bpf_ntohs(ctx->user_port);
	event.local_port = sk->src_port;
	u32 remote = ctx->user_ip4;
	u32 local = sk->src_ip4;
	__builtin_memcpy(event.remote_addr, &remote, 4);
	__builtin_memcpy(event.local_addr, &local, 4);
	note_udp_peer((u64)sk, &event);
	return 1;
}

// The same for IPv6.
static __always_inline int on_udp6(struct bpf_sock_addr *ctx, u8 action)
{
	struct bpf_sock *sk = ctx->sk;
	if (!sk || ctx->protocol != PROTO_UDP)
		return 1;
	u32 pid = bpf_get_current_pid_tgid() >> 32;
	if (pid == agent_pid)
		return 1;
	struct socket_event event = {};
	event.action = action;
	event.protocol = PROTO_UDP;
	event.family = AF_INET6;
	event.pid = pid;
	event.remote_port = bpf_ntohs(ctx->user_port);
	event.local_port = sk->src_port;
	// Context fields must be read one word at a time.
	u32 remote[4] = { ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3] };
	u32 local[4] = { sk->src_ip6[0], sk->src_ip6[1], sk->src_ip6[2], sk->src_ip6[3] };
	__builtin_memcpy(event.remote_addr, remote, 16);
	__builtin_memcpy(event.local_addr, local, 16);
	note_udp_peer((u64)sk, &event);
	return 1;
}

// sendto()/sendmsg() with an address on an unconnected UDP socket.
SEC("cgroup/sendmsg4")
int handle_sendmsg4(struct bpf_sock_addr *ctx)
{
	return on_udp4(ctx, ACTION_CONNECT);
}

SEC("cgroup/sendmsg6")
int handle_sendmsg6(struct bpf_sock_addr *ctx)
{
	return on_udp6(ctx, ACTION_CONNECT);
}

// A datagram received with its source asked for (recvfrom/recvmsg with an address).
SEC("cgroup/recvmsg4")
int handle_recvmsg4(struct bpf_sock_addr *ctx)
{
	return on_udp4(ctx, ACTION_ACCEPT);
}

SEC("cgroup/recvmsg6")
int handle_recvmsg6(struct bpf_sock_addr *ctx)
{
	return on_udp6(ctx, ACTION_ACCEPT);
}

// A TCP socket released with its Connect never reported although it got past SYN_SENT: the
// run of handle_tcp_state for ESTABLISHED was skipped and connect() did not return 0 (a
// non-blocking connect). Reports the Connect now, from the socket as it is.
static __always_inline void recover_connect(struct bpf_sock *sk)
{
	u64 key = (u64)sk;
	struct owner *owner = bpf_map_lookup_elem(&owners, &key);
	if (!owner || owner->event.action != 0)
		return;
	u32 state = sk->state;
	if (state == TCP_SYN_SENT || state == TCP_CLOSE)
		return; // never established
	if (__sync_val_compare_and_swap(&owner->connect_reported, 0, 1) != 0)
		return;
	struct socket_event event = owner->event;
	event.action = ACTION_CONNECT;
	// A sock_release program may not read the addresses from its context: read the kernel's
	// socket as the tracing programs do.
	read_addresses((const struct sock *)owner->sk, &event);
	owner->event = event;
	submit(&event);
}

// The process let go of a socket (its last descriptor closed): Close for UDP, and for TCP
// unless the connection already reached CLOSE.
SEC("cgroup/sock_release")
int handle_sock_release(struct bpf_sock *sk)
{
	if (sk->protocol == PROTO_TCP)
		recover_connect(sk);
	else if (sk->protocol != PROTO_UDP)
		return 1;
	report_close((u64)sk);
	return 1;
}
