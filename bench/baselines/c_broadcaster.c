/*
 * Baseline 4: a minimal C epoll WebSocket broadcaster, the minimal chat protocol, no persistence.
 *
 * The practical ceiling: what fanning out costs on this machine with no interpreter at all.
 * One thread, one level-triggered epoll loop, non-blocking sockets with TCP_NODELAY, plain TCP
 * only (no TLS). Fan-out as the other baselines do it: the event is encoded and framed once and
 * written to each member with its own send(); what the kernel does not take at once is queued
 * on that connection (order kept, nothing dropped) and sent when epoll says it is writable.
 *
 * It is a benchmark baseline, not a product: the JSON reader only extracts the top-level string
 * fields of the loadgen's flat objects (copied through verbatim, escapes and all), no UTF-8 or
 * protocol validation, no limits beyond a cap on message and header sizes.
 *
 *     cc -O2 -Wall -o c_broadcaster c_broadcaster.c -lcrypto
 *     ./c_broadcaster [--port 0]
 *
 * Prints `READY <port>` once listening on 127.0.0.1; SIGTERM or SIGINT stops it (exit 0).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <signal.h>
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

#define MAX_HEADER 8192
#define MAX_MESSAGE (16u << 20)
#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

/* ---------------------------------------------------------------------------------------------
 * buffers */

struct buf {
    char *p;
    size_t len, cap;
};

static void buf_append(struct buf *b, const void *data, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n)
            cap *= 2;
        if (!(b->p = realloc(b->p, cap))) {
            fprintf(stderr, "c_broadcaster: out of memory\n");
            exit(1);
        }
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
}

static void buf_free(struct buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

/* ---------------------------------------------------------------------------------------------
 * connections and rooms */

struct room;

struct conn {
    int fd;
    int upgraded, closing, dead;
    uint32_t events;
    struct buf in;       /* bytes received and not yet parsed (only while a frame is partial) */
    struct buf out;      /* bytes the kernel has not taken yet */
    size_t out_off;      /* ... from out.p + out_off */
    struct buf fragment; /* a fragmented message being assembled */
    int fragment_opcode;
    char *user;          /* the hello's name: the raw JSON string token, quotes included */
    size_t user_len;
    struct room **rooms; /* the rooms this connection joined */
    int nrooms, rooms_cap;
    struct conn *next_dead;
};

struct room {
    char *name; /* the raw JSON string token, quotes included */
    size_t name_len;
    uint64_t seq;
    struct conn **members;
    int nmembers, members_cap;
    struct room *next; /* hash chain */
};

#define ROOM_BUCKETS 4096
static struct room *room_table[ROOM_BUCKETS];
static int epfd;
static struct conn *dead_list; /* freed at the end of each epoll batch, not under anyone's feet */
static volatile sig_atomic_t stopping;
static char scratch[256 * 1024];

static uint64_t hash(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603u; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211u;
    return h;
}

static struct room *room_get(const char *name, size_t n, int create)
{
    struct room **slot = &room_table[hash(name, n) % ROOM_BUCKETS];
    for (struct room *r = *slot; r; r = r->next)
        if (r->name_len == n && memcmp(r->name, name, n) == 0)
            return r;
    if (!create)
        return NULL;
    struct room *r = calloc(1, sizeof *r);
    r->name = malloc(n);
    memcpy(r->name, name, n);
    r->name_len = n;
    r->next = *slot;
    *slot = r;
    return r;
}

static void room_join(struct room *r, struct conn *c)
{
    for (int i = 0; i < c->nrooms; i++)
        if (c->rooms[i] == r)
            return;
    if (c->nrooms == c->rooms_cap) {
        c->rooms_cap = c->rooms_cap ? 2 * c->rooms_cap : 2;
        c->rooms = realloc(c->rooms, sizeof *c->rooms * (size_t)c->rooms_cap);
    }
    c->rooms[c->nrooms++] = r;
    if (r->nmembers == r->members_cap) {
        r->members_cap = r->members_cap ? 2 * r->members_cap : 16;
        r->members = realloc(r->members, sizeof *r->members * (size_t)r->members_cap);
    }
    r->members[r->nmembers++] = c;
}

static void leave_rooms(struct conn *c)
{
    for (int k = 0; k < c->nrooms; k++) {
        struct room *r = c->rooms[k];
        for (int i = 0; i < r->nmembers; i++)
            if (r->members[i] == c) {
                r->members[i] = r->members[--r->nmembers];
                break;
            }
    }
    c->nrooms = 0;
}

static void set_interest(struct conn *c, uint32_t events)
{
    if (c->events == events)
        return;
    c->events = events;
    struct epoll_event e = {.events = events, .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &e);
}

/* Gone: closed at once; it leaves its rooms and is freed after the current batch of epoll
 * events, so that a broadcast loop never sees a room's members move under it (sends to a dead
 * connection are no-ops). */
static void conn_kill(struct conn *c)
{
    if (c->dead)
        return;
    c->dead = 1;
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->next_dead = dead_list;
    dead_list = c;
}

static void free_dead(void)
{
    while (dead_list) {
        struct conn *c = dead_list;
        dead_list = c->next_dead;
        leave_rooms(c);
        buf_free(&c->in);
        buf_free(&c->out);
        buf_free(&c->fragment);
        free(c->user);
        free(c->rooms);
        free(c);
    }
}

/* after our close frame has gone out: no more writes, wait for the client's end of stream */
static void after_drained(struct conn *c)
{
    if (c->closing == 1) {
        shutdown(c->fd, SHUT_WR);
        c->closing = 2;
    }
}

/* send at once; what the kernel does not take waits in c->out, behind anything already there */
static void conn_send(struct conn *c, const void *data, size_t n)
{
    if (c->dead || c->closing == 2)
        return;
    size_t sent = 0;
    if (c->out.len == c->out_off) {
        ssize_t w = send(c->fd, data, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                conn_kill(c);
                return;
            }
            w = 0;
        }
        sent = (size_t)w;
        if (sent == n)
            return;
    }
    buf_append(&c->out, (const char *)data + sent, n - sent);
    set_interest(c, EPOLLIN | EPOLLOUT);
}

static void conn_flush(struct conn *c)
{
    while (c->out_off < c->out.len) {
        ssize_t w = send(c->fd, c->out.p + c->out_off, c->out.len - c->out_off,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                return;
            conn_kill(c);
            return;
        }
        c->out_off += (size_t)w;
    }
    buf_free(&c->out); /* drained: an idle connection holds no buffer */
    c->out_off = 0;
    set_interest(c, EPOLLIN);
    after_drained(c);
}

/* ---------------------------------------------------------------------------------------------
 * WebSocket framing (server side: frames go out unmasked) */

static size_t frame_header(unsigned char *h, int opcode, size_t n)
{
    h[0] = (unsigned char)(0x80 | opcode);
    if (n < 126) {
        h[1] = (unsigned char)n;
        return 2;
    }
    if (n < 65536) {
        h[1] = 126;
        h[2] = (unsigned char)(n >> 8);
        h[3] = (unsigned char)n;
        return 4;
    }
    h[1] = 127;
    for (int i = 0; i < 8; i++)
        h[2 + i] = (unsigned char)((uint64_t)n >> (8 * (7 - i)));
    return 10;
}

/* a frame in out (header then payload), ready to be written to any number of connections */
static void frame_build(struct buf *out, int opcode, const char *payload, size_t n)
{
    unsigned char h[10];
    out->len = 0;
    buf_append(out, h, frame_header(h, opcode, n));
    buf_append(out, payload, n);
}

static void send_frame(struct conn *c, int opcode, const char *payload, size_t n)
{
    static struct buf frame;
    frame_build(&frame, opcode, payload, n);
    conn_send(c, frame.p, frame.len);
}

/* ---------------------------------------------------------------------------------------------
 * JSON: the raw tokens of the top-level string fields of a flat object */

struct tok {
    const char *s; /* from the opening quote to the closing one, both included */
    size_t n;
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
    return i < n ? i + 1 : n;
}

/* fills the tokens of the keys asked for (keys[i] -> out[i]); other values are skipped */
static int json_fields(const char *p, size_t n, const char *const *keys, struct tok *out, int nk)
{
    memset(out, 0, sizeof *out * (size_t)nk);
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
        if (i < n && p[i] == '"') {
            i = skip_string(p, i, n);
        } else { /* a number, true, false or null (flat objects only) */
            while (i < n && p[i] != ',' && p[i] != '}')
                i++;
        }
        if (i - vs >= 2 && p[vs] == '"')
            for (int k = 0; k < nk; k++)
                if (strlen(keys[k]) == kl && memcmp(p + ks, keys[k], kl) == 0) {
                    out[k].s = p + vs;
                    out[k].n = i - vs;
                }
    }
}

static int tok_is(struct tok t, const char *quoted)
{
    return t.s && t.n == strlen(quoted) && memcmp(t.s, quoted, t.n) == 0;
}

static void iso_now(char *out, size_t n) /* 2024-01-02T03:04:05.678Z */
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t k = strftime(out, n, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + k, n - k, ".%03ldZ", ts.tv_nsec / 1000000);
}

/* ---------------------------------------------------------------------------------------------
 * the chat protocol */

static struct buf json, event;

static void json_add(const char *s, size_t n)
{
    buf_append(&json, s, n);
}

static void json_lit(const char *s)
{
    buf_append(&json, s, strlen(s));
}

static void json_tok(struct tok t)
{
    if (t.s)
        buf_append(&json, t.s, t.n);
    else
        json_lit("null");
}

static void on_text(struct conn *c, const char *p, size_t n)
{
    static const char *const keys[] = {"type", "name", "room", "id", "text"};
    struct tok f[5];
    if (json_fields(p, n, keys, f, 5) < 0)
        return;
    struct tok type = f[0], name = f[1], room_name = f[2], id = f[3], text = f[4];
    char num[32];
    json.len = 0;
    if (tok_is(type, "\"hello\"")) {
        if (!name.s)
            return;
        free(c->user);
        c->user = malloc(name.n);
        memcpy(c->user, name.s, name.n);
        c->user_len = name.n;
        json_lit("{\"type\":\"welcome\",\"user\":");
        json_tok(name);
        json_lit(",\"max_text_chars\":4000}");
        send_frame(c, 1, json.p, json.len);
    } else if (tok_is(type, "\"join\"")) {
        if (!room_name.s)
            return;
        struct room *r = room_get(room_name.s, room_name.n, 1);
        room_join(r, c);
        json_lit("{\"type\":\"joined\",\"room\":");
        json_add(r->name, r->name_len);
        json_lit(",\"epoch\":\"bench\",\"seq\":");
        json_add(num, (size_t)snprintf(num, sizeof num, "%llu", (unsigned long long)r->seq));
        json_lit("}");
        send_frame(c, 1, json.p, json.len);
    } else if (tok_is(type, "\"say\"")) {
        struct room *r = room_name.s ? room_get(room_name.s, room_name.n, 0) : NULL;
        if (!r)
            return;
        r->seq += 1;
        char ts[40];
        iso_now(ts, sizeof ts);
        json_lit("{\"type\":\"message\",\"room\":");
        json_add(r->name, r->name_len);
        json_lit(",\"epoch\":\"bench\",\"seq\":");
        json_add(num, (size_t)snprintf(num, sizeof num, "%llu", (unsigned long long)r->seq));
        json_lit(",\"ts\":\"");
        json_lit(ts);
        json_lit("\",\"from\":");
        if (c->user)
            json_add(c->user, c->user_len);
        else
            json_lit("null");
        json_lit(",\"id\":");
        json_tok(id);
        json_lit(",\"text\":");
        json_tok(text);
        json_lit("}");
        frame_build(&event, 1, json.p, json.len); /* framed once, written to every member */
        for (int i = 0; i < r->nmembers; i++)
            conn_send(r->members[i], event.p, event.len);
        json.len = 0;
        json_lit("{\"type\":\"ack\",\"id\":");
        json_tok(id);
        json_lit(",\"seq\":");
        json_add(num, (size_t)snprintf(num, sizeof num, "%llu", (unsigned long long)r->seq));
        json_lit("}");
        send_frame(c, 1, json.p, json.len);
    }
}

static void on_close_frame(struct conn *c, const char *payload, size_t n)
{
    leave_rooms(c);
    send_frame(c, 8, payload, n >= 2 ? 2 : 0); /* echo the status code */
    c->closing = 1;
    if (c->out_off == c->out.len)
        after_drained(c);
}

static void on_frame(struct conn *c, int fin, int opcode, const char *payload, size_t n)
{
    if (opcode >= 8) { /* control frames are never fragmented */
        if (opcode == 8)
            on_close_frame(c, payload, n);
        else if (opcode == 9)
            send_frame(c, 10, payload, n);
        return;
    }
    if (opcode != 0) { /* the first frame of a message */
        if (fin) {
            if (opcode == 1)
                on_text(c, payload, n);
            return;
        }
        c->fragment.len = 0;
        c->fragment_opcode = opcode;
    }
    buf_append(&c->fragment, payload, n);
    if (fin) {
        if (c->fragment_opcode == 1)
            on_text(c, c->fragment.p, c->fragment.len);
        buf_free(&c->fragment);
    } else if (c->fragment.len > MAX_MESSAGE) {
        conn_kill(c);
    }
}

/* ---------------------------------------------------------------------------------------------
 * the opening handshake */

static const char *header_value(const char *head, const char *end, const char *name, size_t *len)
{
    size_t nl = strlen(name);
    for (const char *line = head; line < end;) {
        const char *eol = memmem(line, (size_t)(end - line), "\r\n", 2);
        if (!eol)
            eol = end;
        if ((size_t)(eol - line) > nl && line[nl] == ':' && strncasecmp(line, name, nl) == 0) {
            const char *v = line + nl + 1, *ve = eol;
            while (v < ve && (*v == ' ' || *v == '\t'))
                v++;
            while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            *len = (size_t)(ve - v);
            return v;
        }
        line = eol + 2;
    }
    return NULL;
}

/* >0: the request's length (answered), 0: incomplete, -1: refused (the connection is gone) */
static long upgrade(struct conn *c, const char *p, size_t n)
{
    const char *end = memmem(p, n, "\r\n\r\n", 4);
    if (!end) {
        if (n > MAX_HEADER) {
            conn_kill(c);
            return -1;
        }
        return 0;
    }
    size_t klen = 0;
    const char *key = header_value(p, end + 2, "Sec-WebSocket-Key", &klen);
    if (!key || klen > 64 || n < 4 || memcmp(p, "GET ", 4) != 0) {
        static const char bad[] = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                                  "Connection: close\r\n\r\n";
        send(c->fd, bad, sizeof bad - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
        conn_kill(c);
        return -1;
    }
    char material[64 + sizeof WS_GUID];
    memcpy(material, key, klen);
    memcpy(material + klen, WS_GUID, sizeof WS_GUID - 1);
    unsigned char digest[SHA_DIGEST_LENGTH];
    SHA1((const unsigned char *)material, klen + sizeof WS_GUID - 1, digest);
    char accept[32];
    EVP_EncodeBlock((unsigned char *)accept, digest, SHA_DIGEST_LENGTH);
    char response[256];
    int rn = snprintf(response, sizeof response,
                      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
                      accept);
    c->upgraded = 1;
    conn_send(c, response, (size_t)rn);
    return c->dead ? -1 : (long)(end + 4 - p);
}

/* ---------------------------------------------------------------------------------------------
 * reading */

/* consume what can be consumed of p (unmasking in place); returns the bytes used */
static size_t parse(struct conn *c, char *p, size_t n)
{
    size_t pos = 0;
    if (!c->upgraded) {
        long used = upgrade(c, p, n);
        if (used <= 0)
            return used < 0 ? n : 0;
        pos = (size_t)used;
    }
    while (n - pos >= 2 && !c->dead && !c->closing) {
        unsigned char *h = (unsigned char *)p + pos;
        int fin = h[0] & 0x80, opcode = h[0] & 0x0f, masked = h[1] & 0x80;
        uint64_t len = h[1] & 0x7f;
        size_t hl = 2;
        if (len == 126) {
            if (n - pos < 4)
                break;
            len = (uint64_t)h[2] << 8 | h[3];
            hl = 4;
        } else if (len == 127) {
            if (n - pos < 10)
                break;
            len = 0;
            for (int i = 0; i < 8; i++)
                len = len << 8 | h[2 + i];
            hl = 10;
        }
        if (len > MAX_MESSAGE) {
            conn_kill(c);
            return n;
        }
        if (masked)
            hl += 4;
        if (n - pos < hl + len)
            break;
        char *payload = p + pos + hl;
        if (masked) {
            const unsigned char *mask = h + hl - 4;
            for (uint64_t i = 0; i < len; i++)
                payload[i] ^= (char)mask[i & 3];
        }
        pos += hl + len;
        on_frame(c, fin, opcode, payload, (size_t)len);
    }
    return c->dead || c->closing ? n : pos;
}

static void conn_read(struct conn *c)
{
    for (;;) {
        ssize_t r = recv(c->fd, scratch, sizeof scratch, MSG_DONTWAIT);
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        if (r <= 0) { /* end of stream or an error (a reset) */
            conn_kill(c);
            return;
        }
        if (c->closing) /* the close handshake is done from our side: discard */
            continue;
        if (c->in.len == 0) { /* the usual case: whole frames, parsed where they were read */
            size_t used = parse(c, scratch, (size_t)r);
            if (!c->dead && used < (size_t)r)
                buf_append(&c->in, scratch + used, (size_t)r - used);
        } else {
            buf_append(&c->in, scratch, (size_t)r);
            size_t used = parse(c, c->in.p, c->in.len);
            if (!c->dead) {
                memmove(c->in.p, c->in.p + used, c->in.len - used);
                c->in.len -= used;
                if (c->in.len == 0)
                    buf_free(&c->in);
            }
        }
        if (c->dead || (size_t)r < sizeof scratch) /* a short read drained the socket */
            return;
    }
}

/* ---------------------------------------------------------------------------------------------
 * the loop */

static void on_accept(int listener)
{
    for (;;) {
        int fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                perror("c_broadcaster: accept");
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct conn *c = calloc(1, sizeof *c);
        c->fd = fd;
        c->events = EPOLLIN;
        struct epoll_event e = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &e);
    }
}

static void on_signal(int signum)
{
    (void)signum;
    stopping = 1;
}

int main(int argc, char **argv)
{
    int port = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--port") == 0 && i + 1 < argc) {
            port = atoi(argv[++i]);
        } else {
            fprintf(stderr, "usage: c_broadcaster [--port N]   (plain TCP only: no --tls)\n");
            return 2;
        }
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_signal}; /* no SA_RESTART: epoll_wait returns EINTR */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof addr;
    if (listener < 0 || bind(listener, (struct sockaddr *)&addr, sizeof addr) < 0 ||
        listen(listener, 4096) < 0 || getsockname(listener, (struct sockaddr *)&addr, &alen) < 0) {
        perror("c_broadcaster: listen");
        return 1;
    }
    epfd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event le = {.events = EPOLLIN, .data.ptr = NULL}; /* NULL: the listener */
    epoll_ctl(epfd, EPOLL_CTL_ADD, listener, &le);
    printf("READY %d\n", ntohs(addr.sin_port));
    fflush(stdout);

    static struct epoll_event evs[1024];
    while (!stopping) {
        int n = epoll_wait(epfd, evs, 1024, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("c_broadcaster: epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (!c) {
                on_accept(listener);
                continue;
            }
            if (c->dead)
                continue;
            if (evs[i].events & EPOLLOUT)
                conn_flush(c);
            if (!c->dead && (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
                conn_read(c);
        }
        free_dead();
    }
    return 0;
}
