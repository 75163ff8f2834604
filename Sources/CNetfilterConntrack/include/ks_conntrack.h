// The only C that Keepstate writes around libnetfilter_conntrack: it turns the library's
// opaque objects into one flat struct, builds batched netlink writes, and opens sockets in a
// network namespace. Only the NetfilterConntrack Swift target imports this module.
#ifndef KS_CONNTRACK_H
#define KS_CONNTRACK_H

#include <stdint.h>

struct nfct_handle;

/// One conntrack, flat. Addresses in network byte order (IPv4 in the first 4 bytes); ports,
/// ICMP id and (type << 8 | code) in host order.
typedef struct ks_ct {
    uint8_t family;          // 4 or 6
    uint8_t proto;
    uint8_t tcp_state;       // valid when proto == 6
    uint8_t event;           // KS_EVENT_*
    uint16_t zone;
    uint8_t tcp_flags_orig;  // IP_CT_TCP_FLAG_* of each direction, when proto == 6 (read only)
    uint8_t tcp_flags_repl;
    uint16_t orig_sport, orig_dport, repl_sport, repl_dport;
    uint32_t status, timeout, mark;
    uint8_t orig_src[16], orig_dst[16], repl_src[16], repl_dst[16];
} ks_ct;

/// IP_CT_TCP_FLAG_BE_LIBERAL, for `tcp_flags_orig` / `tcp_flags_repl`.
enum { KS_TCP_FLAG_BE_LIBERAL = 0x08 };

enum { KS_EVENT_NEW = 0, KS_EVENT_UPDATE = 1, KS_EVENT_DESTROY = 2 };

/// Receives conntracks in batches (at most 512 a call) during a dump or an event read.
typedef void (*ks_ct_sink)(const ks_ct *cts, int count, void *context);

/// Opens a ctnetlink handle inside the network namespace at `netns_path` (NULL: the caller's
/// own), subscribed to `groups` (0 for none, NFCT_ALL_CT_GROUPS for events). The calling thread
/// returns to its own namespace before this function returns. NULL with errno on failure.
struct nfct_handle *ks_ct_open(const char *netns_path, unsigned groups);
void ks_ct_close(struct nfct_handle *h);

/// Opens a socket for `ks_ct_write` only. Writes must not share a socket with dumps: reading
/// their acks with a large buffer makes the kernel size later dump messages beyond what
/// libnfnetlink reads, and dumps then lose entries.
struct nfct_handle *ks_ct_open_writer(const char *netns_path);

/// Sets net.netfilter.nf_conntrack_events to 1 in the namespace at `netns_path` (NULL: the
/// caller's). With the default 2, conntracks created while no listener exists never report
/// updates or deletions. Returns the previous value (0, 1 or 2), or -1 with errno.
int ks_ct_enable_events(const char *netns_path);
int ks_ct_fd(struct nfct_handle *h);
/// Sets the socket receive buffer (SO_RCVBUFFORCE, falling back to SO_RCVBUF).
int ks_ct_set_receive_buffer(struct nfct_handle *h, int bytes);

/// Dumps the table (family 0 = both), parsing the messages directly (ks_parse.c). Returns 0,
/// or -1 with errno.
int ks_ct_dump(struct nfct_handle *h, uint8_t family, ks_ct_sink sink, void *context);
/// The same through libnetfilter_conntrack's reader: the reference the tests compare with.
int ks_ct_dump_library(struct nfct_handle *h, uint8_t family, ks_ct_sink sink, void *context);
/// Reads events (recvmmsg, parsed directly) until the socket would block (it is non-blocking),
/// fails, or 1,024 datagrams were read. Returns the number of events delivered, or -1 with
/// errno (ENOBUFS: the kernel dropped events, or one was cut short).
int ks_ct_read_events(struct nfct_handle *h, ks_ct_sink sink, void *context);
/// The same through libnetfilter_conntrack's reader (nfct_catch): the tests' reference.
int ks_ct_read_events_library(struct nfct_handle *h, ks_ct_sink sink, void *context);
/// The fd-level readers behind ks_ct_dump and ks_ct_read_events (ks_parse.c). `seq` tags the
/// dump request; replies of other sequences are skipped.
int ks_ct_dump_fd(int fd, uint8_t family, uint32_t seq, ks_ct_sink sink, void *context);
int ks_ct_read_events_fd(int fd, ks_ct_sink sink, void *context);
int ks_ct_set_nonblocking(struct nfct_handle *h);
/// Joins (nonzero) or leaves (0) the creation and update event groups of an event socket; its
/// destroy events stay. (The kernel skips building an event only when no socket of the whole
/// host listens to its group: another namespace's listener keeps it building them.) Returns 0,
/// or -1 with errno.
int ks_ct_set_event_groups(struct nfct_handle *h, int creations_and_updates);

/// Reads the conntracks whose original tuples (and zones) `keys` name, with batched
/// IPCTNL_MSG_CT_GET requests (up to 128 in flight), without dumping the table. Found ones go
/// to `sink` (event KS_EVENT_NEW); `errors` (count slots) receives each key's errno: 0 found,
/// ENOENT gone, ETIMEDOUT when no answer came within the call's one-second deadline (for the
/// whole call, not each chunk: keys not asked by then stay ETIMEDOUT). Requests are numbered
/// from `seq_base`, so that a late answer to an earlier call is recognised and skipped. Returns the
/// number found, or -1 with errno when the socket failed. Use a socket of its own
/// (`ks_ct_open(path, 0)`): it reads one answer per message.
int ks_ct_get(struct nfct_handle *h, const ks_ct *keys, int count, uint32_t seq_base, ks_ct_sink sink, void *context,
              int *errors);

enum { KS_OP_CREATE = 0, KS_OP_DELETE = 1, KS_OP_UPDATE = 2, KS_OP_TIMEOUT = 3 };

/// Writes `count` conntracks in batched netlink messages. KS_OP_CREATE creates and fails with
/// EEXIST for an entry that exists; KS_OP_UPDATE changes an existing entry's TCP state, timeout
/// and mark (never its NAT or status, which the kernel refuses to change), and with `be_liberal`
/// sets the TCP be-liberal flags (an entry the node made itself has a window the peer's packets
/// may not fit); KS_OP_TIMEOUT changes
/// an existing entry's timeout and nothing else; KS_OP_DELETE deletes.
/// `be_liberal` sets the TCP be-liberal window flags. Returns the number of messages the kernel
/// rejected, or -1 with errno when the socket failed. `errors`, when not NULL, has `count` slots
/// and receives each message's errno (0: accepted).
int ks_ct_write(struct nfct_handle *h, const ks_ct *cts, int count, int op, int be_liberal, int *errors);

/// Creates one conntrack whose master is the existing conntrack with `master`'s original tuple
/// (CTA_TUPLE_MASTER), as an ALG helper's expectation does when it matches: the kernel sets
/// IPS_EXPECTED. For tests of what Keepstate does with such conntracks. `*error` receives the
/// errno (0: created); returns as `ks_ct_write`.
int ks_ct_create_related(struct nfct_handle *h, const ks_ct *ct, const ks_ct *master, int be_liberal, int *error);

#endif
