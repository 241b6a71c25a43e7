/*
 * loadgen: a WebSocket load generator that speaks chatd's wire protocol (docs/protocol.md).
 *
 * One process, one thread, one epoll loop, non-blocking sockets; optional TLS (OpenSSL) when
 * built with -DWITH_TLS. It prints one JSON object per line on stdout; bench/run.py reads them.
 *
 * Modes:
 *   chat       connect --clients, hello, join room r(i % --rooms); then a rate sweep: each step
 *              sends --rate messages/s in total (round-robin over the first --senders clients)
 *              for --step-seconds, waits for every delivery (--drain-seconds at most), and
 *              reports latency percentiles, losses and CPU; the rate grows by --factor until the
 *              step fails (p99 over --p99-ms, or a loss), then --refine bisection steps. A step
 *              during which other processes used over --disturbed-pct of the server's core
 *              (--server-core) is repeated, at most --repeats times in a row.
 *   idle       connect --clients and hello (no join); pause after --warmup and after all, each
 *              time until a line arrives on stdin (the harness reads the server's RSS then).
 *              With --window-seconds, then hold the connections idle that long and report the
 *              server's CPU over the window and the pings it sent (answered with pongs) in it:
 *              what the server's keepalive costs.
 *   handshake  for --duration seconds keep --concurrency opening handshakes in flight:
 *              TCP connect (+ a full TLS handshake: no session is ever offered), HTTP upgrade,
 *              101, then an abortive close (RST, so no TIME_WAIT piles up). With --resume
 *              (TLS), each of the --concurrency slots offers the session its previous
 *              connection got (an abbreviated handshake, as a returning browser makes), says
 *              close_notify before the reset so that the session stays resumable, and the
 *              report counts the handshakes the server did resume.
 *   hold       as idle, but every client joins its room (--room-size, --first-room); after the
 *              pauses and the --window-seconds window, one fan-out step: client 0 posts --rate
 *              messages/s to its room (r0) for --step-seconds, with latency as in chat mode.
 *   storm      a reconnect storm: connect --clients, hello, join (--room-size); --history
 *              messages in every room; then print `armed` and wait for a line on stdin while
 *              the harness restarts the server (closes and resets are expected meanwhile). The
 *              line is `go PID` (the new server's pid): every client reconnects at once, says
 *              hello and joins its room with `since` = its epoch and its last seq less
 *              --missed; a failed attempt is retried after 100-200 ms. Reports how long until
 *              every client had its `joined` (and whether `recovered` was true, and whether its
 *              history held exactly the events after `since`), per-client latency from `go`,
 *              and the refused (ECONNREFUSED, or an HTTP answer other than 101) and otherwise
 *              failed attempts.
 *
 * --sources N: connection i binds 127.0.0.(1 + i % N) before connecting (IP_BIND_ADDRESS_NO_PORT:
 * the port is chosen at connect by the whole 4-tuple), so more connections than one source
 * address's ~28k ephemeral ports can reach one server port.
 *
 * --port P1,P2,...: several servers sharing rooms (chatd nodes on one Redis). Each room's members
 * are spread over them in turn (the k-th member of a room connects to port k % their number), so
 * every room has members on every server and every message crosses between them. With
 * --server-pid and --server-core as lists, the servers' CPU is summed over their processes and
 * `others` is taken over their cores; --redis-pid: a process whose CPU (redis-server's) each
 * chat step reports on its own (redis_cpu_s, redis_cpu_us_per_delivery).
 *
 * --deflate: every client offers permessage-deflate (RFC 7692) and inflates each message the
 * server sent compressed (RSV1), one zlib stream per connection; its own frames stay
 * uncompressed, as the RFC allows. A server that declines is used uncompressed and counted.
 *
 * Latency: the sender writes CLOCK_MONOTONIC nanoseconds into the text of each `say`; every
 * receiver (the sender included) subtracts it from its own clock when it has parsed the frame.
 * Integrity: every event's room seq must be the previous one + 1 on each connection (else it is
 * counted as a gap or a duplicate), and every message must reach every member of its room.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>
#ifdef WITH_TLS
#include <openssl/err.h>
#include <openssl/ssl.h>
#else
typedef struct ssl_st SSL;
#endif

#define MAX_STEPS 40
#define MAX_SERVERS 64 /* --port, --server-pid, --server-core: at most this many each */
#define HBUCKETS 1280
#define STDIN_KEY UINT32_MAX
#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

/* ---------------------------------------------------------------------------------------------
 * options */

static struct {
    const char *host, *path, *sni, *mode, *prefix;
    int port, tls, clients, rooms, senders, refine, max_steps, text_bytes, concurrency, warmup;
    int server_pid, server_core, deflate, redis_pid;
    int ports[MAX_SERVERS], nports, server_pids[MAX_SERVERS], npids;
    int server_cores[MAX_SERVERS], ncores;
    double rate, factor, max_rate, step_s, drain_s, p99_ms, duration_s, hold_s, max_s, settle_s;
    double connect_s, disturbed_pct, window_s, storm_s;
    int repeats, sources, room_size, first_room, history, missed, resume;
} opt = {
    .host = "127.0.0.1", .path = "/ws", .sni = "localhost", .mode = "chat", .prefix = "u",
    .clients = 10, .rooms = 1, .senders = 1, .refine = 2, .max_steps = 12, .text_bytes = 64,
    .concurrency = 32, .warmup = 100, .rate = 10, .factor = 2, .max_rate = 1e7, .step_s = 3,
    .drain_s = 5, .p99_ms = 100, .duration_s = 5, .hold_s = 60, .max_s = 300, .settle_s = 20,
    .connect_s = 120, .server_core = -1,
    .disturbed_pct = 10, .repeats = 1, .window_s = 0, .storm_s = 60, .sources = 1,
    .history = 5, .missed = 5,
};

/* ---------------------------------------------------------------------------------------------
 * clocks, random numbers, small helpers */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static double self_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
           (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* utime and stime of a process (all its threads), from /proc/PID/stat; -1 if unknown */
static int process_times(int pid, double *user, double *sys)
{
    if (pid <= 0)
        return -1;
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    unsigned long long utime, stime;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime,
                     &stime) != 2)
        return -1;
    *user = (double)utime / (double)sysconf(_SC_CLK_TCK);
    *sys = (double)stime / (double)sysconf(_SC_CLK_TCK);
    return 0;
}

/* utime and stime of the server processes (--server-pid: one, or several summed); -1 if unknown */
static int server_times(double *user, double *sys)
{
    if (opt.npids <= 1)
        return process_times(opt.server_pid, user, sys);
    *user = *sys = 0;
    for (int i = 0; i < opt.npids; i++) {
        double u, s;
        if (process_times(opt.server_pids[i], &u, &s) != 0)
            return -1;
        *user += u;
        *sys += s;
    }
    return 0;
}

/* utime + stime of --redis-pid; -1 if unknown or not given */
static double redis_cpu_s(void)
{
    double user, sys;
    return process_times(opt.redis_pid, &user, &sys) == 0 ? user + sys : -1;
}

/* utime + stime of the server process; -1 if unknown */
static double server_cpu_s(void)
{
    double user, sys;
    return server_times(&user, &sys) == 0 ? user + sys : -1;
}

/* the server's CPU, all of it (utime + stime) and the kernel's part (stime: its system calls,
 * above all the sends), from one read of each process's times; both -1 if unknown */
static void server_cpu(double *all, double *sys)
{
    double user;
    if (server_times(&user, sys) == 0)
        *all = user + *sys;
    else
        *all = *sys = -1;
}

/* jiffies the server's core (or cores: summed) spent on processes (user, nice, system) and on
 * interrupts */
static int core_jiffies(unsigned long long *procs, unsigned long long *irqs)
{
    if (opt.server_core < 0)
        return -1;
    FILE *f = fopen("/proc/stat", "r");
    if (!f)
        return -1;
    char line[512];
    int found = 0;
    *procs = *irqs = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long long user, nice, sys, idle, iowait, irq, softirq;
        int cpu, at = 0;
        if (strncmp(line, "cpu", 3) != 0 || line[3] < '0' || line[3] > '9' ||
            sscanf(line + 3, "%d %n", &cpu, &at) != 1 || at == 0)
            continue;
        int mine = 0;
        for (int i = 0; i < opt.ncores; i++)
            mine |= opt.server_cores[i] == cpu;
        if (mine && sscanf(line + 3 + at, "%llu %llu %llu %llu %llu %llu %llu", &user, &nice,
                           &sys, &idle, &iowait, &irq, &softirq) == 7) {
            *procs += user + nice + sys;
            *irqs += irq + softirq;
            found++;
        }
    }
    fclose(f);
    return found == opt.ncores ? 0 : -1;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15u;

static uint32_t rnd(void) /* xorshift64*: masking keys and handshake keys, not cryptography */
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 0x2545f4914f6cdd1du) >> 32);
}

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "loadgen: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    printf("{\"phase\":\"error\"}\n");
    exit(2);
}

static int warnings_left = 10;

static void warn(const char *fmt, ...)
{
    if (warnings_left <= 0)
        return;
    if (--warnings_left == 0)
        fprintf(stderr, "loadgen: (further warnings suppressed)\n");
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "loadgen: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
}

/* ---------------------------------------------------------------------------------------------
 * latency histogram: microseconds, exact below 64, then 32 sub-buckets per power of two (~3%) */

struct hist {
    uint64_t n, max, b[HBUCKETS];
};

static int hbucket(uint64_t v)
{
    if (v < 64)
        return (int)v;
    int e = 63 - __builtin_clzll(v), shift = e - 5;
    int i = 64 + (e - 6) * 32 + (int)((v >> shift) - 32);
    return i < HBUCKETS ? i : HBUCKETS - 1;
}

static double hvalue(int i) /* the middle of bucket i */
{
    if (i < 64)
        return i;
    int e = (i - 64) / 32 + 6, shift = e - 5;
    uint64_t low = (uint64_t)((i - 64) % 32 + 32) << shift;
    return (double)low + (double)(1ull << shift) / 2;
}

static void hadd(struct hist *h, uint64_t us)
{
    h->n++;
    h->b[hbucket(us)]++;
    if (us > h->max)
        h->max = us;
}

static double hpct_ms(const struct hist *h, double p)
{
    if (!h->n)
        return 0;
    uint64_t rank = (uint64_t)ceil(p * (double)h->n), seen = 0;
    for (int i = 0; i < HBUCKETS; i++) {
        seen += h->b[i];
        if (seen >= rank && seen) {
            double v = hvalue(i);
            return (v > (double)h->max ? (double)h->max : v) / 1000.0;
        }
    }
    return (double)h->max / 1000.0;
}

/* ---------------------------------------------------------------------------------------------
 * connections */

enum state { S_FREE, S_TCP, S_TLS, S_UPGRADE, S_HELLO, S_JOIN, S_READY, S_CLOSED };

struct conn {
    int fd, idx, room;
    enum state st;
    SSL *ssl;
    int want_write; /* TLS wants the socket writable before it can go on */
    uint32_t events;
    int64_t last_seq;
    uint64_t t_open;
    char *in, *out;
    size_t in_len, in_cap, out_off, out_len, out_cap;
    z_stream *inflater;    /* when the server accepted permessage-deflate */
    int inflate_per_message; /* it announced server_no_context_takeover: reset after each */
};

struct step {
    double rate, seconds;
    uint64_t sent, acks, expected, received, last_rx;
    struct hist lat;
};

static struct conn *conns;
static int nconns, epfd, pending, ready, *room_size;
static struct step steps[MAX_STEPS];
static int cur_step = -1;
static uint64_t deadline, last_rx, msg_counter;
static char scratch[256 * 1024];
static struct {
    uint64_t dups, gaps, errors, bad_frames, stray, server_closes, dropped, connect_failures;
    uint64_t handshakes, bytes_in, pings; /* pings: received from the server, each answered */
    /* --deflate: connections that negotiated it or not; text messages received compressed
     * (payload bytes on the wire, inflated) and uncompressed on connections that negotiated it */
    uint64_t deflate_accepted, deflate_declined;
    uint64_t compressed_messages, compressed_bytes, inflated_bytes, plain_messages, plain_bytes;
} tot;
static char *inflated; /* the last message inflated */
static size_t inflated_cap;
static struct hist hs_lat;
static char first_close[128]; /* "CODE reason" of the first close frame from the server */

/* storm mode: 0 before the restart, 1 while the server is down (closes are expected), 2 from
 * `go` on (every client reconnecting); per client, what it resumes from */
static int storm_phase;
static uint64_t t_go, t_last_back;
static struct hist storm_lat;
static struct resume {
    int armed; /* it was ready when the server went down: it reconnects at `go` */
    int64_t since;
    uint64_t retry_at; /* when to try again after a failed attempt; 0: not waiting */
    char epoch[40];
} *resume;
static struct {
    uint64_t down_closes, going_away, refused, failed_attempts, back, recovered, not_recovered;
    uint64_t no_resume, history_events, history_mismatch;
} storm;
#ifdef WITH_TLS
static SSL_CTX *tls_ctx;
static const char *tls_version = "", *tls_cipher = "";
static SSL_SESSION **slot_session; /* --resume: what each slot's last connection got */
static uint64_t resumed;           /* --resume: handshakes the server resumed */
#endif

static void conn_close(struct conn *c, int abortive)
{
    if (c->fd < 0)
        return;
#ifdef WITH_TLS
    if (c->ssl)
        SSL_free(c->ssl);
#endif
    c->ssl = NULL;
    if (c->inflater) {
        inflateEnd(c->inflater);
        free(c->inflater);
        c->inflater = NULL;
    }
    if (abortive) {
        struct linger lg = {1, 0};
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
    close(c->fd);
    c->fd = -1;
    c->st = S_CLOSED;
    free(c->in);
    free(c->out);
    c->in = c->out = NULL;
    c->in_len = c->in_cap = c->out_off = c->out_len = c->out_cap = 0;
}

/* the connection is gone before (a failure to connect) or after it was ready (a drop) */
static void conn_lost(struct conn *c, const char *why)
{
    if (storm_phase == 1 && c->st == S_READY) { /* the server is being restarted */
        storm.down_closes++;
        ready--;
        conn_close(c, 1);
        return;
    }
    if (c->st == S_READY) {
        tot.dropped++;
        ready--;
        warn("client %d dropped: %s", c->idx, why);
    } else {
        tot.connect_failures++;
        pending--;
        warn("client %d failed while connecting: %s", c->idx, why);
        if (storm_phase == 2) {
            storm.failed_attempts++;
            resume[c->idx].retry_at = now_ns() + 100000000u + rnd() % 100000000u;
        }
    }
    conn_close(c, 1);
}

static void set_interest(struct conn *c, int want_out)
{
    uint32_t ev = EPOLLIN | (want_out ? EPOLLOUT : 0);
    if (ev == c->events)
        return;
    c->events = ev;
    struct epoll_event e = {.events = ev, .data.u32 = (uint32_t)c->idx};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &e);
}

/* >0 bytes, -2 would block, 0 end of stream, -1 error */
static ssize_t io_read(struct conn *c, char *buf, size_t n)
{
#ifdef WITH_TLS
    if (c->ssl) {
        int r = SSL_read(c->ssl, buf, (int)n);
        if (r > 0)
            return r;
        switch (SSL_get_error(c->ssl, r)) {
        case SSL_ERROR_WANT_WRITE:
            c->want_write = 1;
            set_interest(c, 1);
            /* fall through */
        case SSL_ERROR_WANT_READ:
            return -2;
        case SSL_ERROR_ZERO_RETURN:
            return 0;
        default:
            ERR_clear_error();
            return -1;
        }
    }
#endif
    ssize_t r = read(c->fd, buf, n);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return -2;
    return r;
}

/* >0 bytes written, 0 would block, -1 error */
static ssize_t io_write(struct conn *c, const char *buf, size_t n)
{
#ifdef WITH_TLS
    if (c->ssl) {
        int r = SSL_write(c->ssl, buf, (int)n);
        if (r > 0)
            return r;
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ)
            return 0;
        ERR_clear_error();
        return -1;
    }
#endif
    ssize_t r = send(c->fd, buf, n, MSG_NOSIGNAL);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return 0;
    return r;
}

static void conn_flush(struct conn *c)
{
    c->want_write = 0;
    while (c->out_len > c->out_off) {
        ssize_t w = io_write(c, c->out + c->out_off, c->out_len - c->out_off);
        if (w < 0) {
            conn_lost(c, "write failed");
            return;
        }
        if (w == 0)
            break;
        c->out_off += (size_t)w;
    }
    if (c->out_off == c->out_len)
        c->out_off = c->out_len = 0;
    set_interest(c, c->out_len > 0 || c->want_write);
}

static char *reserve(char **buf, size_t *cap, size_t len, size_t more)
{
    if (len + more > *cap) {
        size_t ncap = *cap ? *cap : 512;
        while (ncap < len + more)
            ncap *= 2;
        if (!(*buf = realloc(*buf, ncap)))
            die("out of memory");
        *cap = ncap;
    }
    return *buf + len;
}

static void send_raw(struct conn *c, const char *data, size_t n)
{
    if (c->out_off && c->out_off == c->out_len)
        c->out_off = c->out_len = 0;
    memcpy(reserve(&c->out, &c->out_cap, c->out_len, n), data, n);
    c->out_len += n;
    conn_flush(c);
}

/* one masked, final frame (client frames must be masked, RFC 6455 5.3) */
static void send_frame(struct conn *c, int opcode, const char *payload, size_t n)
{
    if (c->out_off && c->out_off == c->out_len)
        c->out_off = c->out_len = 0;
    unsigned char *h = (unsigned char *)reserve(&c->out, &c->out_cap, c->out_len, n + 14);
    size_t hl = 0;
    h[hl++] = (unsigned char)(0x80 | opcode);
    if (n < 126) {
        h[hl++] = (unsigned char)(0x80 | n);
    } else if (n < 65536) {
        h[hl++] = 0x80 | 126;
        h[hl++] = (unsigned char)(n >> 8);
        h[hl++] = (unsigned char)n;
    } else {
        h[hl++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            h[hl++] = (unsigned char)((uint64_t)n >> (8 * i));
    }
    uint32_t key = rnd();
    unsigned char *mask = h + hl;
    memcpy(mask, &key, 4);
    hl += 4;
    for (size_t i = 0; i < n; i++)
        h[hl + i] = (unsigned char)payload[i] ^ mask[i & 3];
    c->out_len += hl + n;
    conn_flush(c);
}

static void send_text(struct conn *c, const char *fmt, ...)
{
    char buf[8192];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0 || n >= (int)sizeof buf)
        die("frame too long");
    send_frame(c, 1, buf, (size_t)n);
}

/* --port P1,P2,...: the k-th member of each room connects to port k % their number */
static int port_of(int idx)
{
    if (opt.nports <= 1)
        return opt.port;
    int member = idx; /* its place among its room's members */
    if (opt.room_size > 0 && idx >= opt.first_room)
        member = (idx - opt.first_room) % opt.room_size;
    else if (opt.room_size <= 0 && opt.rooms > 0)
        member = idx / opt.rooms;
    return opt.ports[member % opt.nports];
}

static void send_upgrade(struct conn *c)
{
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char key[25];
    for (int i = 0; i < 21; i++) /* 16 random bytes in base64: 21 characters and 1 padded */
        key[i] = b64[rnd() & 63];
    key[21] = b64[(rnd() & 3) << 4];
    strcpy(key + 22, "==");
    char req[512];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                     "Sec-WebSocket-Version: 13\r\n%s\r\n",
                     opt.path, opt.tls ? opt.sni : opt.host, port_of(c->idx), key,
                     opt.deflate ? "Sec-WebSocket-Extensions: permessage-deflate; "
                                   "client_max_window_bits\r\n"
                                 : "");
    c->st = S_UPGRADE;
    send_raw(c, req, (size_t)n);
}

#ifdef WITH_TLS
static void tls_step(struct conn *c)
{
    int r = SSL_connect(c->ssl);
    if (r == 1) {
        tls_version = SSL_get_version(c->ssl);
        tls_cipher = SSL_get_cipher_name(c->ssl);
        send_upgrade(c);
        return;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        set_interest(c, e == SSL_ERROR_WANT_WRITE);
        return;
    }
    char why[256];
    ERR_error_string_n(ERR_get_error(), why, sizeof why);
    ERR_clear_error();
    conn_lost(c, why);
}
#endif

/* with --room-size: clients 0..--first-room-1 in r0, then rooms of --room-size in turn */
static int room_of(int idx)
{
    if (opt.room_size > 0) {
        if (idx < opt.first_room)
            return 0;
        return (opt.first_room > 0) + (idx - opt.first_room) / opt.room_size;
    }
    return opt.rooms > 0 ? idx % opt.rooms : -1;
}

static void conn_open(struct conn *c)
{
    memset(c, 0, sizeof *c);
    c->idx = (int)(c - conns);
    c->room = room_of(c->idx);
    c->last_seq = -1;
    c->t_open = now_ns();
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        die("socket: %s (raise the open-file limit)", strerror(errno));
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (opt.sources > 1) {
        struct sockaddr_in src = {.sin_family = AF_INET};
        src.sin_addr.s_addr = htonl(0x7f000001u + (uint32_t)(c->idx % opt.sources));
        setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        if (bind(c->fd, (struct sockaddr *)&src, sizeof src) < 0)
            die("bind to 127.0.0.%d: %s", 1 + c->idx % opt.sources, strerror(errno));
    }
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_port = htons((uint16_t)port_of(c->idx));
    inet_pton(AF_INET, opt.host, &sa.sin_addr);
    c->st = S_TCP;
    c->events = EPOLLIN | EPOLLOUT;
    struct epoll_event e = {.events = c->events, .data.u32 = (uint32_t)c->idx};
    epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &e);
    pending++;
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) < 0 && errno != EINPROGRESS) {
        storm.refused += errno == ECONNREFUSED;
        conn_lost(c, strerror(errno));
    }
}

static void on_connected(struct conn *c)
{
#ifdef WITH_TLS
    if (opt.tls) {
        c->ssl = SSL_new(tls_ctx);
        SSL_set_fd(c->ssl, c->fd);
        SSL_set_tlsext_host_name(c->ssl, opt.sni);
        if (opt.resume && slot_session[c->idx])
            SSL_set_session(c->ssl, slot_session[c->idx]);
        c->st = S_TLS;
        tls_step(c);
        return;
    }
#endif
    send_upgrade(c);
}

static void on_ready(struct conn *c)
{
    c->st = S_READY;
    pending--;
    ready++;
}

/* ---------------------------------------------------------------------------------------------
 * server frames: a tiny scanner for the top-level "type", "seq", "id" and "text" of a JSON object */

struct jstr {
    const char *s;
    size_t n;
};

struct msg {
    struct jstr type, id, text, epoch;
    int64_t seq;
    int has_seq;
    int recovered; /* 1 true, 0 false, -1 absent */
    int history;   /* the elements of "history", -1 absent */
};

static size_t skip_ws(const char *p, size_t i, size_t n)
{
    while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == '\n' || p[i] == '\r'))
        i++;
    return i;
}

static size_t skip_string(const char *p, size_t i, size_t n) /* p[i] is the opening quote */
{
    for (i++; i < n && p[i] != '"'; i++)
        if (p[i] == '\\')
            i++;
    return i + 1;
}

static size_t skip_value(const char *p, size_t i, size_t n)
{
    if (i < n && p[i] == '"')
        return skip_string(p, i, n);
    if (i < n && (p[i] == '{' || p[i] == '[')) {
        int depth = 0;
        while (i < n) {
            if (p[i] == '"') {
                i = skip_string(p, i, n);
                continue;
            }
            if (p[i] == '{' || p[i] == '[')
                depth++;
            else if ((p[i] == '}' || p[i] == ']') && --depth == 0)
                return i + 1;
            i++;
        }
        return n;
    }
    while (i < n && p[i] != ',' && p[i] != '}' && p[i] != ']')
        i++;
    return i;
}

/* the objects and arrays directly inside the array p[i..end) */
static int count_elements(const char *p, size_t i, size_t end)
{
    int depth = 0, n = 0;
    while (i < end) {
        if (p[i] == '"') {
            i = skip_string(p, i, end);
            continue;
        }
        if (p[i] == '{' || p[i] == '[')
            n += depth++ == 1;
        else if (p[i] == '}' || p[i] == ']')
            depth--;
        i++;
    }
    return n;
}

static int key_is(const char *p, size_t start, size_t len, const char *key)
{
    return strlen(key) == len && memcmp(p + start, key, len) == 0;
}

static int scan(const char *p, size_t n, struct msg *m)
{
    memset(m, 0, sizeof *m);
    m->recovered = m->history = -1;
    size_t i = skip_ws(p, 0, n);
    if (i >= n || p[i] != '{')
        return -1;
    for (i++;;) {
        i = skip_ws(p, i, n);
        if (i >= n)
            return -1;
        if (p[i] == '}')
            return 0;
        if (p[i] == ',') {
            i++;
            continue;
        }
        if (p[i] != '"')
            return -1;
        size_t ks = i + 1;
        i = skip_string(p, i, n);
        size_t kl = i - 1 - ks;
        i = skip_ws(p, i, n);
        if (i >= n || p[i] != ':')
            return -1;
        i = skip_ws(p, i + 1, n);
        size_t vs = i;
        i = skip_value(p, i, n);
        if (i > n)
            return -1;
        struct jstr *dst = NULL;
        if (key_is(p, ks, kl, "type"))
            dst = &m->type;
        else if (key_is(p, ks, kl, "id"))
            dst = &m->id;
        else if (key_is(p, ks, kl, "text"))
            dst = &m->text;
        else if (key_is(p, ks, kl, "epoch"))
            dst = &m->epoch;
        else if (key_is(p, ks, kl, "recovered") && vs < n)
            m->recovered = p[vs] == 't';
        else if (key_is(p, ks, kl, "history") && vs < n && p[vs] == '[')
            m->history = count_elements(p, vs, i);
        else if (key_is(p, ks, kl, "seq") && vs < n && p[vs] >= '0' && p[vs] <= '9') {
            m->seq = 0;
            for (size_t k = vs; k < i && p[k] >= '0' && p[k] <= '9'; k++)
                m->seq = m->seq * 10 + (p[k] - '0');
            m->has_seq = 1;
        }
        if (dst && p[vs] == '"' && i >= vs + 2) {
            dst->s = p + vs + 1;
            dst->n = i - vs - 2;
        }
    }
}

static int is(struct jstr s, const char *lit)
{
    return s.s && key_is(s.s, 0, s.n, lit);
}

static uint64_t parse_uint(const char **p, const char *end)
{
    uint64_t v = 0;
    while (*p < end && **p >= '0' && **p <= '9')
        v = v * 10 + (uint64_t)(*(*p)++ - '0');
    return v;
}

static void check_seq(struct conn *c, const struct msg *m)
{
    if (!m->has_seq || c->last_seq < 0) {
        tot.bad_frames++;
        return;
    }
    if (m->seq == c->last_seq + 1) {
        c->last_seq = m->seq;
    } else if (m->seq <= c->last_seq) {
        tot.dups++;
    } else {
        tot.gaps += (uint64_t)(m->seq - c->last_seq - 1);
        c->last_seq = m->seq;
    }
}

/* the text of our messages: "STEP:SENT_NS:CLIENT:" padded with x */
static void on_message(struct conn *c, const struct msg *m, uint64_t now)
{
    check_seq(c, m);
    const char *p = m->text.s, *end = p + m->text.n;
    if (!p) {
        tot.bad_frames++;
        return;
    }
    uint64_t step = parse_uint(&p, end);
    if (p >= end || *p++ != ':' || step >= MAX_STEPS) {
        tot.stray++;
        return;
    }
    uint64_t sent = parse_uint(&p, end);
    struct step *s = &steps[step];
    s->received++;
    s->last_rx = now;
    hadd(&s->lat, now > sent ? (now - sent) / 1000 : 0);
}

/* a storm's reconnected client has its `joined`: is it back with exactly what it missed? */
static void on_resumed(struct conn *c, const struct msg *m, uint64_t now)
{
    hadd(&storm_lat, (now - t_go) / 1000);
    t_last_back = now;
    storm.back++;
    if (m->recovered < 0) {
        storm.no_resume++; /* a baseline: no resume in its protocol */
    } else if (m->recovered) {
        storm.recovered++;
        if (m->history >= 0)
            storm.history_events += (uint64_t)m->history;
        if (m->history != m->seq - resume[c->idx].since)
            storm.history_mismatch++;
    } else {
        storm.not_recovered++;
    }
}

static void on_text(struct conn *c, const char *p, size_t n)
{
    struct msg m;
    uint64_t now = now_ns();
    last_rx = now;
    if (scan(p, n, &m) < 0 || !m.type.s) {
        tot.bad_frames++;
        return;
    }
    if (is(m.type, "message")) {
        on_message(c, &m, now);
    } else if (is(m.type, "presence")) {
        check_seq(c, &m);
    } else if (is(m.type, "ack")) {
        const char *q = m.id.s, *end = q + m.id.n;
        uint64_t step = q ? parse_uint(&q, end) : MAX_STEPS;
        if (step < MAX_STEPS)
            steps[step].acks++;
        else
            tot.stray++;
    } else if (is(m.type, "welcome") && c->st == S_HELLO) {
        if (c->room < 0) {
            on_ready(c);
        } else {
            c->st = S_JOIN;
            struct resume *r = resume ? &resume[c->idx] : NULL;
            if (storm_phase == 2 && r->epoch[0])
                send_text(c,
                          "{\"type\":\"join\",\"room\":\"r%d\",\"since\":{\"epoch\":\"%s\","
                          "\"seq\":%lld}}",
                          c->room, r->epoch, (long long)r->since);
            else
                send_text(c, "{\"type\":\"join\",\"room\":\"r%d\"}", c->room);
        }
    } else if (is(m.type, "joined") && c->st == S_JOIN) {
        c->last_seq = m.has_seq ? m.seq : 0;
        if (storm_phase == 2)
            on_resumed(c, &m, now);
        if (resume && m.epoch.s && m.epoch.n < sizeof resume->epoch) {
            memcpy(resume[c->idx].epoch, m.epoch.s, m.epoch.n);
            resume[c->idx].epoch[m.epoch.n] = 0;
        }
        on_ready(c);
    } else if (is(m.type, "error")) {
        tot.errors++;
        warn("client %d got an error frame: %.*s", c->idx, (int)(n > 300 ? 300 : n), p);
        if (storm_phase == 2 && c->st != S_READY)
            conn_lost(c, "an error frame while reconnecting"); /* retried */
    } else {
        tot.stray++;
    }
}

/* ---------------------------------------------------------------------------------------------
 * permessage-deflate (RFC 7692), with --deflate */

/* the value of header `name` (trimmed) in an HTTP head whose blank line starts at `end` */
static const char *header_value(const char *head, const char *end, const char *name, size_t *n)
{
    size_t name_len = strlen(name);
    for (const char *line = head; line < end;) {
        const char *eol = memmem(line, (size_t)(end - line), "\r\n", 2);
        if (!eol)
            eol = end;
        if ((size_t)(eol - line) > name_len && line[name_len] == ':' &&
            strncasecmp(line, name, name_len) == 0) {
            const char *v = line + name_len + 1, *v_end = eol;
            while (v < v_end && (*v == ' ' || *v == '\t'))
                v++;
            while (v_end > v && (v_end[-1] == ' ' || v_end[-1] == '\t'))
                v_end--;
            *n = (size_t)(v_end - v);
            return v;
        }
        line = eol + 2;
    }
    return NULL;
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    for (char *e = s + strlen(s); e > s && (e[-1] == ' ' || e[-1] == '\t'); e--)
        e[-1] = 0;
    return s;
}

/* the server's Sec-WebSocket-Extensions: 0 and the parameters that concern its frames, or -1 if
 * it is anything but one permessage-deflate with parameters a server may answer */
static int parse_deflate_response(const char *value, size_t n, int *window_bits, int *no_takeover)
{
    char text[512], *save;
    if (n >= sizeof text || memchr(value, ',', n)) /* we offered one extension, once */
        return -1;
    memcpy(text, value, n);
    text[n] = 0;
    *window_bits = 15;
    *no_takeover = 0;
    char *name = strtok_r(text, ";", &save);
    if (!name || strcmp(trim(name), "permessage-deflate") != 0)
        return -1;
    for (char *param; (param = strtok_r(NULL, ";", &save));) {
        char *arg = strchr(param, '=');
        if (arg) {
            *arg++ = 0;
            arg = trim(arg);
            if (*arg == '"') /* a quoted-string value; atoi stops at the closing quote */
                arg++;
        }
        param = trim(param);
        if (strcmp(param, "server_no_context_takeover") == 0 && !arg) {
            *no_takeover = 1;
        } else if (strcmp(param, "server_max_window_bits") == 0 && arg) {
            *window_bits = atoi(arg);
            if (*window_bits < 8 || *window_bits > 15)
                return -1;
        } else if (strcmp(param, "client_no_context_takeover") != 0 &&
                   strcmp(param, "client_max_window_bits") != 0) {
            return -1; /* the client_ ones bind our compressor, and we send uncompressed */
        }
    }
    return 0;
}

/* after the 101 whose head ends at `end`: inflate from now on if the server accepted; -1 if it
 * answered something we did not offer (the connection is lost) */
static int negotiate_deflate(struct conn *c, const char *head, const char *end)
{
    size_t n;
    const char *value = header_value(head, end, "Sec-WebSocket-Extensions", &n);
    if (!value) {
        if (tot.deflate_declined++ == 0)
            warn("the server declined permessage-deflate (first: client %d), going on without",
                 c->idx);
        return 0;
    }
    int window_bits, no_takeover;
    if (parse_deflate_response(value, n, &window_bits, &no_takeover) < 0) {
        char why[256];
        snprintf(why, sizeof why, "not what we offered: Sec-WebSocket-Extensions: %.*s",
                 (int)(n > 180 ? 180 : n), value);
        conn_lost(c, why);
        return -1;
    }
    /* zlib's deflate has no 256-byte window: a server held to 8 bits compresses with 9 */
    if (window_bits < 9)
        window_bits = 9;
    c->inflater = calloc(1, sizeof *c->inflater);
    if (!c->inflater || inflateInit2(c->inflater, -window_bits) != Z_OK)
        die("inflateInit2 failed");
    c->inflate_per_message = no_takeover;
    tot.deflate_accepted++;
    return 0;
}

/* one compressed message into `inflated` (RFC 7692 7.2.2): its payload, then the empty stored
 * block's 00 00 ff ff that the server took off its end; -1 if it is not valid deflate data */
static ssize_t inflate_message(struct conn *c, const char *payload, size_t n)
{
    static const unsigned char tail[4] = {0x00, 0x00, 0xff, 0xff};
    z_stream *z = c->inflater;
    size_t len = 0;
    int tail_fed = 0;
    z->next_in = (Bytef *)payload;
    z->avail_in = (uInt)n;
    for (;;) {
        reserve(&inflated, &inflated_cap, len, 4096);
        z->next_out = (Bytef *)inflated + len;
        z->avail_out = (uInt)(inflated_cap - len);
        int r = inflate(z, Z_SYNC_FLUSH);
        len = (size_t)((char *)z->next_out - inflated);
        if (r == Z_STREAM_END) { /* a final block: the next message starts a new stream */
            inflateReset(z);
            return (ssize_t)len;
        }
        if (r != Z_OK && r != Z_BUF_ERROR)
            return -1;
        if (z->avail_in == 0 && z->avail_out > 0) { /* all in, all out */
            if (tail_fed)
                break;
            z->next_in = (Bytef *)tail;
            z->avail_in = sizeof tail;
            tail_fed = 1;
        }
    }
    if (c->inflate_per_message)
        inflateReset(z);
    return (ssize_t)len;
}

static void on_compressed_text(struct conn *c, const char *payload, size_t n)
{
    ssize_t len = inflate_message(c, payload, n);
    if (len < 0) {
        conn_lost(c, "invalid deflate data");
        return;
    }
    tot.compressed_messages++;
    tot.compressed_bytes += n;
    tot.inflated_bytes += (uint64_t)len;
    on_text(c, inflated, (size_t)len);
}

static void on_upgraded(struct conn *c)
{
    if (strcmp(opt.mode, "handshake") == 0) {
        tot.handshakes++;
        hadd(&hs_lat, (now_ns() - c->t_open) / 1000);
        pending--;
#ifdef WITH_TLS
        if (opt.resume) {
            /* TLS 1.3 sends its ticket after the handshake: read by now, with the 101 */
            resumed += (uint64_t)SSL_session_reused(c->ssl);
            SSL_SESSION *got = SSL_get1_session(c->ssl);
            if (got && SSL_SESSION_is_resumable(got)) {
                if (slot_session[c->idx])
                    SSL_SESSION_free(slot_session[c->idx]);
                slot_session[c->idx] = got;
            } else if (got) {
                SSL_SESSION_free(got);
            }
            SSL_shutdown(c->ssl); /* without close_notify, neither side may resume it */
        }
#endif
        conn_close(c, 1);
        return;
    }
    c->st = S_HELLO;
    send_text(c, "{\"type\":\"hello\",\"name\":\"%s%d\"}", opt.prefix, c->idx);
}

/* consume what can be consumed of buf; returns the bytes used */
static size_t parse(struct conn *c, char *buf, size_t len)
{
    size_t pos = 0;
    if (c->st == S_UPGRADE) {
        char *end = memmem(buf, len, "\r\n\r\n", 4);
        if (!end) {
            if (len > 16384)
                conn_lost(c, "oversized HTTP response");
            return 0;
        }
        if (len < 12 || memcmp(buf, "HTTP/1.1 101", 12) != 0) {
            warn("client %d: upgrade refused: %.*s", c->idx, (int)(end - buf), buf);
            storm.refused++;
            conn_lost(c, "upgrade refused");
            return len;
        }
        pos = (size_t)(end + 4 - buf);
        if (opt.deflate && negotiate_deflate(c, buf, end) < 0)
            return len;
        on_upgraded(c);
        if (c->fd < 0)
            return len;
    }
    while (len - pos >= 2) {
        unsigned char *h = (unsigned char *)buf + pos;
        int fin = h[0] & 0x80, compressed = h[0] & 0x40, opcode = h[0] & 0x0f;
        int masked = h[1] & 0x80;
        uint64_t plen = h[1] & 0x7f;
        size_t hl = 2;
        if (plen == 126) {
            if (len - pos < 4)
                break;
            plen = (uint64_t)h[2] << 8 | h[3];
            hl = 4;
        } else if (plen == 127) {
            if (len - pos < 10)
                break;
            plen = 0;
            for (int i = 0; i < 8; i++)
                plen = plen << 8 | h[2 + i];
            hl = 10;
        }
        if (masked)
            hl += 4;
        if (len - pos < hl + plen)
            break;
        char *payload = buf + pos + hl;
        if (masked)
            for (uint64_t i = 0; i < plen; i++)
                payload[i] ^= (char)h[hl - 4 + (i & 3)];
        pos += hl + plen;
        if (!fin || opcode == 0) {
            tot.bad_frames++; /* fragmented messages: none of the servers send them */
        } else if (compressed) { /* RSV1: only data frames, and only with permessage-deflate */
            if (opcode == 1 && c->inflater)
                on_compressed_text(c, payload, plen);
            else
                tot.bad_frames++;
        } else if (opcode == 1) {
            if (c->inflater) {
                tot.plain_messages++;
                tot.plain_bytes += plen;
            }
            on_text(c, payload, plen);
        } else if (opcode == 8) {
            tot.server_closes++;
            int code = plen >= 2 ? (unsigned char)payload[0] << 8 | (unsigned char)payload[1] : 0;
            int rlen = plen > 2 ? (int)(plen - 2 > 100 ? 100 : plen - 2) : 0;
            storm.going_away += code == 1001;
            if (!first_close[0]) {
                snprintf(first_close, sizeof first_close, "%d %.*s", code, rlen, payload + 2);
                for (char *q = first_close; *q; q++) /* it goes into a JSON string */
                    if (*q == '"' || *q == '\\' || (unsigned char)*q < 0x20)
                        *q = '?';
            }
            char why[160];
            snprintf(why, sizeof why, "the server closed it: %d %.*s", code, rlen, payload + 2);
            conn_lost(c, why);
        } else if (opcode == 9) {
            tot.pings++;
            send_frame(c, 10, payload, plen);
        } else if (opcode != 10) {
            tot.bad_frames++;
        }
        if (c->fd < 0)
            return len;
    }
    return pos;
}

static void feed(struct conn *c, char *data, size_t n)
{
    if (c->in_len == 0) {
        size_t used = parse(c, data, n);
        if (c->fd >= 0 && used < n) {
            memcpy(reserve(&c->in, &c->in_cap, 0, n - used), data + used, n - used);
            c->in_len = n - used;
        }
        return;
    }
    memcpy(reserve(&c->in, &c->in_cap, c->in_len, n), data, n);
    c->in_len += n;
    size_t used = parse(c, c->in, c->in_len);
    if (c->fd >= 0) {
        memmove(c->in, c->in + used, c->in_len - used);
        c->in_len -= used;
    }
}

static void conn_read(struct conn *c)
{
    for (;;) {
        ssize_t n = io_read(c, scratch, sizeof scratch);
        if (n == -2)
            return;
        if (n <= 0) {
            conn_lost(c, n == 0 ? "end of stream" : "read failed");
            return;
        }
        tot.bytes_in += (uint64_t)n;
        feed(c, scratch, (size_t)n);
        if (c->fd < 0)
            return;
        /* a short read drained the socket: epoll (level-triggered) says when there is more */
#ifdef WITH_TLS
        if ((size_t)n < sizeof scratch && !(c->ssl && SSL_pending(c->ssl) > 0))
            return;
#else
        if ((size_t)n < sizeof scratch)
            return;
#endif
    }
}

static void on_event(struct conn *c, uint32_t ev)
{
    if (c->fd < 0)
        return;
    if (c->st == S_TCP) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            storm.refused += err == ECONNREFUSED;
            conn_lost(c, strerror(err));
        }
        else if (ev & (EPOLLOUT | EPOLLIN))
            on_connected(c);
        return;
    }
#ifdef WITH_TLS
    if (c->st == S_TLS) {
        tls_step(c);
        return;
    }
#endif
    if (ev & EPOLLOUT)
        conn_flush(c);
    if (c->fd >= 0 && (ev & (EPOLLIN | EPOLLERR | EPOLLHUP)))
        conn_read(c);
}

static int stdin_line; /* set when the harness writes a line (or closes our stdin) */
static char stdin_text[256]; /* what it wrote since the last pause began */
static size_t stdin_len;

static void poll_once(int timeout_ms)
{
    struct epoll_event evs[1024];
    int n = epoll_wait(epfd, evs, 1024, timeout_ms);
    for (int i = 0; i < n; i++) {
        if (evs[i].data.u32 == STDIN_KEY) {
            char buf[256];
            ssize_t got = read(0, buf, sizeof buf);
            if (got > 0 && stdin_len + (size_t)got < sizeof stdin_text) {
                memcpy(stdin_text + stdin_len, buf, (size_t)got);
                stdin_len += (size_t)got;
                stdin_text[stdin_len] = 0;
            }
            if (got <= 0 || memchr(buf, '\n', (size_t)got))
                stdin_line = 1;
            continue;
        }
        on_event(&conns[evs[i].data.u32], evs[i].events);
    }
    if (now_ns() > deadline)
        die("still running after --max-seconds %.0f: giving up", opt.max_s);
}

/* ---------------------------------------------------------------------------------------------
 * phases */

/* open connections 0..upto-1 with at most --concurrency handshakes in flight */
static void connect_clients(int upto)
{
    uint64_t t0 = now_ns(), limit = t0 + (uint64_t)(opt.connect_s * 1e9);
    static int next;
    while ((next < upto || pending > 0) && now_ns() < limit) {
        while (next < upto && pending < opt.concurrency)
            conn_open(&conns[next++]);
        poll_once(5);
    }
    /* wait for quiet: chatd announces every join to the room (presence events) */
    uint64_t quiet_from = now_ns(), settle_end = quiet_from + (uint64_t)(opt.settle_s * 1e9);
    last_rx = now_ns();
    double cpu = server_cpu_s();
    uint64_t window = now_ns();
    for (int busy = 1; (busy || now_ns() - last_rx < 300000000u) && now_ns() < settle_end;) {
        poll_once(20);
        if (now_ns() - window >= 300000000u) { /* busy: over 20% of a core in the last window */
            double later = server_cpu_s();
            busy = cpu >= 0 && later - cpu > 0.2 * (double)(now_ns() - window) / 1e9;
            cpu = later;
            window = now_ns();
        }
    }
    printf("{\"phase\":\"connect\",\"clients\":%d,\"ready\":%d,\"failed\":%llu,\"seconds\":%.3f,"
           "\"settle_seconds\":%.3f",
           upto, ready, (unsigned long long)tot.connect_failures, (quiet_from - t0) / 1e9,
           (now_ns() - quiet_from) / 1e9);
    if (opt.nports > 1) { /* several servers: how many ready clients each holds, by --port */
        for (int p = 0; p < opt.nports; p++) {
            int n = 0;
            for (int i = 0; i < upto; i++)
                n += conns[i].st == S_READY && port_of(i) == opt.ports[p];
            printf("%s%d", p ? "," : ",\"ready_per_port\":[", n);
        }
        printf("]");
    }
    printf("}\n");
    fflush(stdout);
}

static void send_say(struct conn *c, int step)
{
    char text[4096];
    int n = snprintf(text, sizeof text, "%d:%llu:%d:", step, (unsigned long long)now_ns(),
                     c->idx);
    while (n < opt.text_bytes && n < (int)sizeof text - 1)
        text[n++] = 'x';
    text[n] = 0;
    send_text(c, "{\"type\":\"say\",\"room\":\"r%d\",\"text\":\"%s\",\"id\":\"%d-%llu\"}",
              c->room, text, step, (unsigned long long)++msg_counter);
}

/* one step of the sweep: 1 passed, 0 failed, -1 lost deliveries (end the sweep), 2 disturbed by
 * other processes on the server's core and to be repeated (when may_repeat) */
static int run_step(int k, double rate, const int *senders, int nsenders, int may_repeat)
{
    struct step *s = &steps[k];
    cur_step = k;
    s->rate = rate;
    s->seconds = opt.step_s;
    double cpu0, sys0, self0 = self_cpu_s(), redis0 = redis_cpu_s();
    server_cpu(&cpu0, &sys0);
    unsigned long long procs0 = 0, irqs0 = 0, procs1 = 0, irqs1 = 0;
    int core = core_jiffies(&procs0, &irqs0);
    uint64_t t0 = now_ns(), end = t0 + (uint64_t)(opt.step_s * 1e9);
    uint64_t next_sender = 0;
    for (uint64_t t = t0; t < end; t = now_ns()) {
        uint64_t due = (uint64_t)((double)(t - t0) * rate / 1e9);
        while (s->sent < due) {
            struct conn *c = &conns[senders[next_sender++ % (uint64_t)nsenders]];
            if (c->st == S_READY) {
                send_say(c, k);
                s->expected += (uint64_t)room_size[c->room];
            }
            s->sent++;
        }
        double next = (double)t0 + (double)(s->sent + 1) * 1e9 / rate;
        poll_once(next <= (double)now_ns() ? 0 : 1);
    }
    uint64_t drain_end = now_ns() + (uint64_t)(opt.drain_s * 1e9);
    while ((s->received < s->expected || s->acks < s->sent) && now_ns() < drain_end)
        poll_once(2);
    double cpu1, sys1, self1 = self_cpu_s(), redis1 = redis_cpu_s();
    server_cpu(&cpu1, &sys1);
    if (core == 0)
        core = core_jiffies(&procs1, &irqs1);
    uint64_t t1 = now_ns();
    double wall = (double)(t1 - t0) / 1e9, hz = (double)sysconf(_SC_CLK_TCK);
    double span = s->last_rx > t0 ? (double)(s->last_rx - t0) / 1e9 : opt.step_s;
    if (span < opt.step_s)
        span = opt.step_s;
    double p99 = hpct_ms(&s->lat, 0.99);
    uint64_t lost = s->expected > s->received ? s->expected - s->received : 0;
    int ok = s->sent > 0 && lost == 0 && s->acks >= s->sent && p99 <= opt.p99_ms;
    double server = cpu0 >= 0 && cpu1 >= 0 ? cpu1 - cpu0 : -1;
    double others = core == 0 && server >= 0
                        ? fmax(0, 100.0 * ((double)(procs1 - procs0) / hz - server) / wall) /
                              opt.ncores
                        : -1;
    int repeat = may_repeat && others > opt.disturbed_pct && !lost;
    printf("{\"phase\":\"step\",\"step\":%d,\"rate\":%.2f,\"seconds\":%.3f,\"sent\":%llu,"
           "\"acks\":%llu,\"expected\":%llu,\"received\":%llu,\"lost\":%llu,"
           "\"offered_dps\":%.1f,\"delivered_dps\":%.1f,\"p50_ms\":%.3f,\"p90_ms\":%.3f,"
           "\"p99_ms\":%.3f,\"p999_ms\":%.3f,\"max_ms\":%.3f,\"server_cpu_s\":%.3f,"
           "\"server_sys_s\":%.3f,\"server_cpu_us_per_delivery\":%.3f,\"loadgen_cpu_s\":%.3f,"
           "\"loadgen_cpu_pct\":%.1f,\"wall_s\":%.3f,\"dups\":%llu,\"gaps\":%llu,"
           "\"errors\":%llu,\"dropped\":%llu,\"core_others_pct\":%.1f,"
           "\"core_irq_pct\":%.1f,\"repeated\":%s,\"ok\":%s",
           k, rate, opt.step_s, (unsigned long long)s->sent, (unsigned long long)s->acks,
           (unsigned long long)s->expected, (unsigned long long)s->received,
           (unsigned long long)lost, (double)s->expected / opt.step_s,
           (double)s->received / span, hpct_ms(&s->lat, 0.5), hpct_ms(&s->lat, 0.9), p99,
           hpct_ms(&s->lat, 0.999), (double)s->lat.max / 1000.0, server,
           server >= 0 ? sys1 - sys0 : -1,
           server >= 0 && s->received ? server * 1e6 / (double)s->received : -1, self1 - self0,
           100.0 * (self1 - self0) / wall, wall,
           (unsigned long long)tot.dups, (unsigned long long)tot.gaps,
           (unsigned long long)tot.errors, (unsigned long long)tot.dropped,
           others, core == 0 ? 100.0 * (double)(irqs1 - irqs0) / hz / wall / opt.ncores : -1,
           repeat ? "true" : "false", ok ? "true" : "false");
    if (opt.redis_pid > 0) { /* redis-server's CPU, on its own */
        double redis = redis0 >= 0 && redis1 >= 0 ? redis1 - redis0 : -1;
        printf(",\"redis_cpu_s\":%.3f,\"redis_cpu_us_per_delivery\":%.3f", redis,
               redis >= 0 && s->received ? redis * 1e6 / (double)s->received : -1);
    }
    printf("}\n");
    fflush(stdout);
    if (lost)
        return -1; /* a backlog we could not drain: the next step would measure it, stop */
    return repeat ? 2 : ok;
}

/* the members of each room that are ready (run_step counts the deliveries it expects by it) */
static void count_room_sizes(void)
{
    room_size = calloc((size_t)opt.rooms, sizeof *room_size);
    for (int i = 0; i < nconns; i++)
        if (conns[i].st == S_READY)
            room_size[conns[i].room]++;
}

static void run_chat(void)
{
    connect_clients(nconns);
    count_room_sizes();
    int *senders = malloc(sizeof(int) * (size_t)opt.senders), nsenders = 0;
    for (int i = 0; i < nconns && i < opt.senders; i++)
        if (conns[i].st == S_READY)
            senders[nsenders++] = i;
    if (nsenders == 0)
        die("no sender is connected");
    double rate = opt.rate, good = 0, bad = 0;
    for (int k = 0, counted = 0, refined = 0, repeats = 0; counted < opt.max_steps && k < MAX_STEPS;
         k++) {
        int ok = run_step(k, rate, senders, nsenders, repeats < opt.repeats);
        if (ok < 0)
            break;
        if (ok == 2) { /* the same rate again */
            repeats++;
            continue;
        }
        repeats = 0;
        counted++;
        if (ok)
            good = rate;
        else
            bad = rate;
        if (bad == 0) { /* up until a step fails */
            rate *= opt.factor;
            if (rate > opt.max_rate)
                break;
        } else if (good == 0) { /* the first steps failed: down until one passes */
            rate /= opt.factor;
        } else if (refined++ < opt.refine) { /* then bisect between the two */
            rate = sqrt(good * bad);
        } else {
            break;
        }
    }
    free(senders);
}

static void watch_stdin(void)
{
    struct epoll_event e = {.events = EPOLLIN, .data.u32 = STDIN_KEY};
    epoll_ctl(epfd, EPOLL_CTL_ADD, 0, &e);
}

static void pause_for_stdin(const char *phase)
{
    printf("{\"phase\":\"%s\",\"ready\":%d,\"failed\":%llu}\n", phase, ready,
           (unsigned long long)tot.connect_failures);
    fflush(stdout);
    stdin_line = 0;
    stdin_len = 0;
    stdin_text[0] = 0;
    uint64_t end = now_ns() + (uint64_t)(opt.hold_s * 1e9);
    while (!stdin_line && now_ns() < end)
        poll_once(50);
}

/* hold every connection idle for --window-seconds: the server's CPU and the pings it sent */
static void idle_window(void)
{
    double user0 = -1, sys0 = -1, user1 = -1, sys1 = -1, self0 = self_cpu_s();
    int known = server_times(&user0, &sys0) == 0;
    unsigned long long procs0 = 0, irqs0 = 0, procs1 = 0, irqs1 = 0;
    int core = core_jiffies(&procs0, &irqs0);
    uint64_t pings0 = tot.pings, dropped0 = tot.dropped, closes0 = tot.server_closes;
    int ready0 = ready;
    uint64_t t0 = now_ns(), end = t0 + (uint64_t)(opt.window_s * 1e9);
    for (uint64_t t = t0; t < end; t = now_ns())
        poll_once((int)((end - t) / 1000000u) + 1);
    known = known && server_times(&user1, &sys1) == 0;
    double self1 = self_cpu_s();
    if (core == 0)
        core = core_jiffies(&procs1, &irqs1);
    double wall = (double)(now_ns() - t0) / 1e9, hz = (double)sysconf(_SC_CLK_TCK);
    double server = known ? user1 - user0 + sys1 - sys0 : -1;
    uint64_t pings = tot.pings - pings0;
    double others = core == 0 && server >= 0
                        ? fmax(0, 100.0 * ((double)(procs1 - procs0) / hz - server) / wall) /
                              opt.ncores
                        : -1;
    printf("{\"phase\":\"window\",\"seconds\":%.3f,\"connections_at_start\":%d,"
           "\"connections\":%d,\"pings\":%llu,\"server_cpu_s\":%.3f,\"server_user_s\":%.3f,"
           "\"server_sys_s\":%.3f,\"server_cpu_pct\":%.2f,"
           "\"server_cpu_us_per_ping\":%.3f,\"loadgen_cpu_s\":%.3f,\"loadgen_cpu_pct\":%.1f,"
           "\"dropped\":%llu,\"server_closes\":%llu,\"core_others_pct\":%.1f,"
           "\"core_irq_pct\":%.1f}\n",
           wall, ready0, ready, (unsigned long long)pings, server, known ? user1 - user0 : -1,
           known ? sys1 - sys0 : -1, server >= 0 ? 100.0 * server / wall : -1,
           server >= 0 && pings ? server * 1e6 / (double)pings : -1, self1 - self0,
           100.0 * (self1 - self0) / wall, (unsigned long long)(tot.dropped - dropped0),
           (unsigned long long)(tot.server_closes - closes0), others,
           core == 0 ? 100.0 * (double)(irqs1 - irqs0) / hz / wall / opt.ncores : -1);
    fflush(stdout);
}

static void run_idle(void)
{
    watch_stdin();
    int warm = opt.warmup < nconns ? opt.warmup : 0;
    if (warm) {
        connect_clients(warm);
        pause_for_stdin("warm");
    }
    connect_clients(nconns);
    pause_for_stdin("idle");
    if (opt.window_s > 0)
        idle_window();
}

/* idle, joined connections; then their keepalive window and one fan-out step to r0 */
static void run_hold(void)
{
    run_idle();
    count_room_sizes();
    int sender = 0;
    if (conns[sender].st != S_READY)
        die("client 0, r0's sender, is not connected");
    printf("{\"phase\":\"fanout\",\"room_members\":%d}\n", room_size[0]);
    run_step(0, opt.rate, &sender, 1, 0);
}

/* wait for the harness's `go PID` (it restarts the server meanwhile); the new server's pid */
static int wait_for_go(void)
{
    uint64_t end = now_ns() + (uint64_t)(opt.hold_s * 1e9);
    stdin_line = 0;
    stdin_len = 0;
    stdin_text[0] = 0;
    while (!stdin_line && now_ns() < end)
        poll_once(20);
    int pid = 0;
    if (sscanf(stdin_text, "go %d", &pid) != 1 || pid <= 0)
        die("expected `go PID` on stdin, got %.40s", stdin_text);
    return pid;
}

static void run_storm(void)
{
    watch_stdin();
    connect_clients(nconns);
    count_room_sizes();
    /* some history: --history messages in each room, from its first member, rooms in turn */
    int *senders = malloc(sizeof(int) * (size_t)opt.rooms), nsenders = 0;
    for (int i = 0; i < nconns; i++)
        if (conns[i].st == S_READY && (i == 0 || conns[i - 1].room != conns[i].room))
            senders[nsenders++] = i;
    if (opt.history > 0 && nsenders > 0) {
        opt.step_s = (double)opt.history * nsenders / opt.rate;
        run_step(0, opt.rate, senders, nsenders, 0);
    }
    free(senders);
    int armed = 0;
    for (int i = 0; i < nconns; i++) {
        if (conns[i].st != S_READY)
            continue;
        resume[i].armed = 1;
        resume[i].since = conns[i].last_seq > opt.missed ? conns[i].last_seq - opt.missed : 0;
        armed++;
    }
    storm_phase = 1;
    printf("{\"phase\":\"armed\",\"ready\":%d,\"rooms\":%d}\n", armed, opt.rooms);
    fflush(stdout);
    opt.server_pid = wait_for_go();
    opt.npids = 1;
    storm_phase = 2;
    uint64_t unnoticed = 0;
    for (int i = 0; i < nconns; i++) {
        if (conns[i].fd >= 0) { /* no close or reset reached it: drop it now */
            unnoticed++;
            if (conns[i].st == S_READY)
                ready--;
            conn_close(&conns[i], 1);
        }
    }
    pending = 0;
    double cpu0 = server_cpu_s(), self0 = self_cpu_s();
    t_go = now_ns();
    uint64_t end = t_go + (uint64_t)(opt.storm_s * 1e9);
    for (int i = 0; i < nconns; i++)
        if (resume[i].armed)
            conn_open(&conns[i]);
    while (storm.back < (uint64_t)armed && now_ns() < end) {
        poll_once(5);
        uint64_t now = now_ns();
        for (int i = 0; i < nconns; i++) {
            struct resume *r = &resume[i];
            if (r->retry_at && now >= r->retry_at && conns[i].fd < 0) {
                r->retry_at = 0;
                conn_open(&conns[i]);
            }
        }
    }
    double cpu1 = server_cpu_s(), self1 = self_cpu_s();
    double wall = (double)(now_ns() - t_go) / 1e9;
    /* then quiet: chatd announces every rejoin to the room, and the seqs are checked */
    uint64_t settle_end = now_ns() + (uint64_t)(opt.settle_s * 1e9);
    last_rx = now_ns();
    while (now_ns() - last_rx < 300000000u && now_ns() < settle_end)
        poll_once(20);
    double server = cpu0 >= 0 && cpu1 >= 0 ? cpu1 - cpu0 : -1;
    printf("{\"phase\":\"storm\",\"clients\":%d,\"back\":%llu,\"all_back\":%s,"
           "\"back_s\":%.3f,\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f,"
           "\"recovered\":%llu,\"not_recovered\":%llu,\"no_resume\":%llu,"
           "\"history_events\":%llu,\"history_mismatch\":%llu,\"refused\":%llu,"
           "\"failed_attempts\":%llu,\"down_closes\":%llu,\"going_away\":%llu,"
           "\"unnoticed\":%llu,\"server_cpu_s\":%.3f,\"server_cpu_pct\":%.1f,"
           "\"loadgen_cpu_pct\":%.1f,\"dups\":%llu,\"gaps\":%llu,\"dropped\":%llu}\n",
           armed, (unsigned long long)storm.back,
           storm.back == (uint64_t)armed ? "true" : "false",
           storm.back ? (double)(t_last_back - t_go) / 1e9 : -1, hpct_ms(&storm_lat, 0.5),
           hpct_ms(&storm_lat, 0.99), (double)storm_lat.max / 1000.0,
           (unsigned long long)storm.recovered, (unsigned long long)storm.not_recovered,
           (unsigned long long)storm.no_resume, (unsigned long long)storm.history_events,
           (unsigned long long)storm.history_mismatch, (unsigned long long)storm.refused,
           (unsigned long long)storm.failed_attempts, (unsigned long long)storm.down_closes,
           (unsigned long long)storm.going_away, (unsigned long long)unnoticed, server,
           server >= 0 ? 100.0 * server / wall : -1, 100.0 * (self1 - self0) / wall,
           (unsigned long long)tot.dups, (unsigned long long)tot.gaps,
           (unsigned long long)tot.dropped);
    fflush(stdout);
}

static void run_handshakes(void)
{
    double self0 = self_cpu_s(), cpu0, sys0;
    server_cpu(&cpu0, &sys0);
    uint64_t t0 = now_ns(), end = t0 + (uint64_t)(opt.duration_s * 1e9);
    for (int i = 0; i < nconns; i++)
        conn_open(&conns[i]);
    while (now_ns() < end) {
        poll_once(1);
        for (int i = 0; i < nconns && now_ns() < end; i++)
            if (conns[i].fd < 0)
                conn_open(&conns[i]);
    }
    double seconds = (now_ns() - t0) / 1e9, self1 = self_cpu_s(), cpu1, sys1;
    server_cpu(&cpu1, &sys1);
    printf("{\"phase\":\"handshake\",\"handshakes\":%llu,\"failed\":%llu,\"seconds\":%.3f,"
           "\"per_s\":%.1f,\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f,"
           "\"server_cpu_s\":%.3f,\"server_sys_s\":%.3f,\"loadgen_cpu_s\":%.3f,"
           "\"loadgen_cpu_pct\":%.1f",
           (unsigned long long)tot.handshakes, (unsigned long long)tot.connect_failures, seconds,
           (double)tot.handshakes / seconds, hpct_ms(&hs_lat, 0.5), hpct_ms(&hs_lat, 0.99),
           (double)hs_lat.max / 1000.0, cpu0 >= 0 ? cpu1 - cpu0 : -1,
           cpu0 >= 0 ? sys1 - sys0 : -1, self1 - self0,
           100.0 * (self1 - self0) / seconds);
#ifdef WITH_TLS
    printf(",\"tls_version\":\"%s\",\"tls_cipher\":\"%s\"", tls_version, tls_cipher);
    if (opt.resume)
        printf(",\"resumed\":%llu", (unsigned long long)resumed);
#endif
    printf("}\n");
    fflush(stdout);
}

/* ---------------------------------------------------------------------------------------------
 * main */

/* N or N1,N2,...: the numbers into `out` (at most MAX_SERVERS); how many */
static int int_list(const char *arg, int *out, const char *what)
{
    int n = 0;
    for (const char *p = arg; *p;) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || n == MAX_SERVERS || (*end && *end != ','))
            die("%s wants N or N1,N2,... (at most %d), got %s", what, MAX_SERVERS, arg);
        out[n++] = (int)v;
        p = *end ? end + 1 : end;
    }
    return n;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: loadgen --port N[,N...] [--tls] [--mode chat|idle|handshake|hold|storm]\n"
            "  [--clients N] [--sources N] [--room-size N] [--first-room N] [--history N]\n"
            "  [--missed N] [--storm-seconds S]\n"
            "  [--rooms N] [--senders N] [--rate MSGS_PER_S] [--factor F] [--refine N]\n"
            "  [--max-steps N] [--max-rate R] [--step-seconds S] [--drain-seconds S]\n"
            "  [--p99-ms MS] [--text-bytes N] [--concurrency N] [--duration S] [--warmup N]\n"
            "  [--hold-seconds S] [--settle-seconds S] [--max-seconds S]\n"
            "  [--server-pid PID[,PID...]] [--server-core N[,N...]] [--redis-pid PID]\n"
            "  [--disturbed-pct P] [--repeats N] [--connect-seconds S]\n"
            "  [--name-prefix P] [--path /ws] [--sni NAME] [--window-seconds S] [--deflate]\n"
            "  [--resume]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"port", 1, 0, 'p'},          {"tls", 0, 0, 'T'},           {"mode", 1, 0, 'm'},
        {"clients", 1, 0, 'c'},       {"rooms", 1, 0, 'r'},         {"senders", 1, 0, 's'},
        {"rate", 1, 0, 'R'},          {"factor", 1, 0, 'F'},        {"refine", 1, 0, 'B'},
        {"max-steps", 1, 0, 'K'},     {"max-rate", 1, 0, 'X'},      {"step-seconds", 1, 0, 'S'},
        {"drain-seconds", 1, 0, 'D'}, {"p99-ms", 1, 0, 'P'},        {"text-bytes", 1, 0, 'b'},
        {"concurrency", 1, 0, 'C'},   {"duration", 1, 0, 'd'},      {"warmup", 1, 0, 'w'},
        {"hold-seconds", 1, 0, 'H'},  {"settle-seconds", 1, 0, 'Q'}, {"max-seconds", 1, 0, 'M'},
        {"server-pid", 1, 0, 'i'},    {"name-prefix", 1, 0, 'n'},   {"path", 1, 0, 'u'},
        {"sni", 1, 0, 'N'},           {"connect-seconds", 1, 0, 'Z'}, {"server-core", 1, 0, 'O'},
        {"disturbed-pct", 1, 0, 'U'}, {"repeats", 1, 0, 'Y'},       {"window-seconds", 1, 0, 'W'},
        {"deflate", 0, 0, 'z'},       {"sources", 1, 0, 'a'},       {"room-size", 1, 0, 'e'},
        {"first-room", 1, 0, 'f'},    {"history", 1, 0, 'h'},       {"missed", 1, 0, 'x'},
        {"storm-seconds", 1, 0, 'g'}, {"redis-pid", 1, 0, 'I'},     {"resume", 0, 0, 'J'},
        {0, 0, 0, 0},
    };
    int o;
    while ((o = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (o) {
        case 'p': opt.nports = int_list(optarg, opt.ports, "--port"); break;
        case 'T': opt.tls = 1; break;
        case 'm': opt.mode = optarg; break;
        case 'c': opt.clients = atoi(optarg); break;
        case 'r': opt.rooms = atoi(optarg); break;
        case 's': opt.senders = atoi(optarg); break;
        case 'R': opt.rate = atof(optarg); break;
        case 'F': opt.factor = atof(optarg); break;
        case 'B': opt.refine = atoi(optarg); break;
        case 'K': opt.max_steps = atoi(optarg); break;
        case 'X': opt.max_rate = atof(optarg); break;
        case 'S': opt.step_s = atof(optarg); break;
        case 'D': opt.drain_s = atof(optarg); break;
        case 'P': opt.p99_ms = atof(optarg); break;
        case 'b': opt.text_bytes = atoi(optarg); break;
        case 'C': opt.concurrency = atoi(optarg); break;
        case 'd': opt.duration_s = atof(optarg); break;
        case 'w': opt.warmup = atoi(optarg); break;
        case 'H': opt.hold_s = atof(optarg); break;
        case 'Q': opt.settle_s = atof(optarg); break;
        case 'M': opt.max_s = atof(optarg); break;
        case 'i': opt.npids = int_list(optarg, opt.server_pids, "--server-pid"); break;
        case 'n': opt.prefix = optarg; break;
        case 'u': opt.path = optarg; break;
        case 'N': opt.sni = optarg; break;
        case 'Z': opt.connect_s = atof(optarg); break;
        case 'O': opt.ncores = int_list(optarg, opt.server_cores, "--server-core"); break;
        case 'U': opt.disturbed_pct = atof(optarg); break;
        case 'Y': opt.repeats = atoi(optarg); break;
        case 'W': opt.window_s = atof(optarg); break;
        case 'z': opt.deflate = 1; break;
        case 'a': opt.sources = atoi(optarg); break;
        case 'e': opt.room_size = atoi(optarg); break;
        case 'f': opt.first_room = atoi(optarg); break;
        case 'h': opt.history = atoi(optarg); break;
        case 'x': opt.missed = atoi(optarg); break;
        case 'g': opt.storm_s = atof(optarg); break;
        case 'I': opt.redis_pid = atoi(optarg); break;
        case 'J': opt.resume = 1; break;
        default: usage();
        }
    }
    opt.port = opt.nports > 0 ? opt.ports[0] : 0;
    opt.server_pid = opt.npids > 0 ? opt.server_pids[0] : 0;
    opt.server_core = opt.ncores > 0 ? opt.server_cores[0] : -1;
    int chat = strcmp(opt.mode, "chat") == 0, idle = strcmp(opt.mode, "idle") == 0;
    int handshake = strcmp(opt.mode, "handshake") == 0, hold = strcmp(opt.mode, "hold") == 0;
    int storming = strcmp(opt.mode, "storm") == 0;
    if (opt.port <= 0 || opt.clients <= 0 || opt.rate <= 0 || opt.factor <= 1 ||
        opt.concurrency <= 0 || opt.sources < 1 || opt.sources > 254 ||
        (!chat && !idle && !handshake && !hold && !storming) ||
        ((hold || storming) && opt.room_size <= 0) || (opt.resume && (!handshake || !opt.tls)))
        usage();
#ifndef WITH_TLS
    if (opt.tls)
        die("built without TLS (no OpenSSL headers when it was compiled)");
#else
    if (opt.tls) {
        tls_ctx = SSL_CTX_new(TLS_client_method());
        SSL_CTX_set_verify(tls_ctx, SSL_VERIFY_NONE, NULL);
        SSL_CTX_set_session_cache_mode(tls_ctx, SSL_SESS_CACHE_OFF);
        if (!opt.resume) /* TLS 1.2: no ticket; a session ID the server would keep for nothing */
            SSL_CTX_set_options(tls_ctx, SSL_OP_NO_TICKET);
        SSL_CTX_set_mode(tls_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
                                      SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                                      SSL_MODE_RELEASE_BUFFERS);
    }
#endif
    signal(SIGPIPE, SIG_IGN);
    rng_state ^= now_ns() ^ ((uint64_t)getpid() << 32);
    if (!idle && !hold)
        opt.warmup = 0;
    if (idle)
        opt.rooms = 0;
    if (opt.room_size > 0)
        opt.rooms = room_of(opt.clients - 1) + 1;
    if (storming)
        resume = calloc((size_t)opt.clients, sizeof *resume);
    if (opt.senders > opt.clients)
        opt.senders = opt.clients;
    if (chat && opt.rooms <= 0)
        opt.rooms = 1;
    nconns = handshake ? opt.concurrency : opt.clients;
    conns = calloc((size_t)nconns, sizeof *conns);
#ifdef WITH_TLS
    slot_session = calloc((size_t)nconns, sizeof *slot_session);
#endif
    for (int i = 0; i < nconns; i++)
        conns[i].fd = -1;
    epfd = epoll_create1(EPOLL_CLOEXEC);
    uint64_t t0 = now_ns();
    deadline = t0 + (uint64_t)(opt.max_s * 1e9);

    if (chat)
        run_chat();
    else if (idle)
        run_idle();
    else if (hold)
        run_hold();
    else if (storming)
        run_storm();
    else
        run_handshakes();

    uint64_t received = 0, expected = 0, sent = 0, acks = 0;
    for (int k = 0; k < MAX_STEPS; k++) {
        received += steps[k].received;
        expected += steps[k].expected;
        sent += steps[k].sent;
        acks += steps[k].acks;
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("{\"phase\":\"done\",\"wall_s\":%.3f,\"loadgen_user_s\":%.3f,\"loadgen_sys_s\":%.3f,"
           "\"loadgen_max_rss_kb\":%ld,\"sent\":%llu,\"acks\":%llu,\"expected\":%llu,"
           "\"received\":%llu,\"lost\":%llu,\"dups\":%llu,\"gaps\":%llu,\"errors\":%llu,"
           "\"bad_frames\":%llu,\"stray\":%llu,\"server_closes\":%llu,\"dropped\":%llu,"
           "\"connect_failures\":%llu,\"bytes_in\":%llu,\"pings\":%llu,\"first_close\":\"%s\"",
           (now_ns() - t0) / 1e9, ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6,
           ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6, ru.ru_maxrss,
           (unsigned long long)sent, (unsigned long long)acks, (unsigned long long)expected,
           (unsigned long long)received,
           (unsigned long long)(expected > received ? expected - received : 0),
           (unsigned long long)tot.dups, (unsigned long long)tot.gaps,
           (unsigned long long)tot.errors, (unsigned long long)tot.bad_frames,
           (unsigned long long)tot.stray, (unsigned long long)tot.server_closes,
           (unsigned long long)tot.dropped, (unsigned long long)tot.connect_failures,
           (unsigned long long)tot.bytes_in, (unsigned long long)tot.pings, first_close);
    if (opt.deflate)
        printf(",\"deflate_accepted\":%llu,\"deflate_declined\":%llu,"
               "\"compressed_messages\":%llu,\"compressed_bytes\":%llu,\"inflated_bytes\":%llu,"
               "\"plain_messages\":%llu,\"plain_bytes\":%llu",
               (unsigned long long)tot.deflate_accepted, (unsigned long long)tot.deflate_declined,
               (unsigned long long)tot.compressed_messages,
               (unsigned long long)tot.compressed_bytes, (unsigned long long)tot.inflated_bytes,
               (unsigned long long)tot.plain_messages, (unsigned long long)tot.plain_bytes);
    printf("}\n");
    fflush(stdout);
    for (int i = 0; i < nconns; i++)
        conn_close(&conns[i], 0);
    return 0;
}
