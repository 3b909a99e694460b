/*
 * loadgen: closed-loop GET load over N connections, one thread each, for RPMP or Redis.
 * The same program drives both servers, so their ops/s compare the servers and not two clients.
 *
 *   loadgen rpmp|redis HOST PORT CONNECTIONS SECONDS KEY VALUE_BYTES
 * prints: ops=<total> seconds=<elapsed> ops_per_s=<rate> errors=<n>
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "rpmp_protocol.h" /* generated from rpmp/protocol.py by tests/gen_protocol.py */

static int redis_mode;
static const char *host, *key;
static int port;
static long value_bytes;
static volatile int stop;

struct worker {
    pthread_t th;
    long ops, errors;
};

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int connect_to(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, host, &a.sin_addr);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        perror("connect");
        exit(2);
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static int read_full(int fd, char *buf, long n) {
    long got = 0;
    while (got < n) {
        ssize_t r = recv(fd, buf + got, n - got, 0);
        if (r <= 0) return -1;
        got += r;
    }
    return 0;
}

static void put_le(char *p, uint64_t v, int n) {
    for (int i = 0; i < n; i++) p[i] = (char)(v >> (8 * i));
}

static void *run(void *arg) {
    struct worker *w = arg;
    int fd = connect_to();
    char req[512];
    long req_len;
    size_t klen = strlen(key);
    char *buf = malloc(value_bytes + 4096);
    if (redis_mode) {
        req_len = snprintf(req, sizeof req, "*2\r\n$3\r\nGET\r\n$%zu\r\n%s\r\n", klen, key);
    } else { /* RPMP GET: header (magic u32, version u8, opcode u8, flags u16, request_id u64, meta_len u32,
              * reserved u32, data_len u64) + meta `bytes key` */
        memset(req, 0, RPMP_HEADER_SIZE);
        put_le(req, RPMP_MAGIC, 4);
        req[4] = RPMP_VERSION;
        req[5] = RPMP_OP_GET;
        put_le(req + 16, 4 + klen, 4);
        put_le(req + RPMP_HEADER_SIZE, klen, 4);
        memcpy(req + RPMP_HEADER_SIZE + 4, key, klen);
        req_len = RPMP_HEADER_SIZE + 4 + klen;
    }
    uint64_t rid = 0;
    while (!stop) {
        if (!redis_mode) put_le(req + 8, ++rid, 8);
        if (send(fd, req, req_len, 0) != req_len) break;
        if (redis_mode) { /* "$<n>\r\n" then n bytes then "\r\n" */
            long hdr = 0, n;
            while (hdr < 64) {
                if (recv(fd, buf + hdr, 1, 0) != 1) goto out;
                if (buf[hdr++] == '\n') break;
            }
            if (buf[0] != '$' || (n = atol(buf + 1)) != value_bytes) { w->errors++; goto out; }
            if (read_full(fd, buf, n + 2)) goto out;
        } else {
            if (read_full(fd, buf, RPMP_HEADER_SIZE)) goto out;
            uint32_t flags = (uint8_t)buf[6] | ((uint8_t)buf[7] << 8);
            uint32_t meta = 0;
            uint64_t data = 0;
            memcpy(&meta, buf + 16, 4);
            memcpy(&data, buf + 24, 8);
            if ((flags & RPMP_FLAG_ERROR) || (long)data != value_bytes) { w->errors++; goto out; }
            if (read_full(fd, buf, meta + data)) goto out;
        }
        w->ops++;
    }
out:
    close(fd);
    free(buf);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 8) {
        fprintf(stderr, "usage: loadgen rpmp|redis HOST PORT CONNECTIONS SECONDS KEY VALUE_BYTES\n");
        return 2;
    }
    redis_mode = strcmp(argv[1], "redis") == 0;
    host = argv[2];
    port = atoi(argv[3]);
    int conns = atoi(argv[4]);
    double seconds = atof(argv[5]);
    key = argv[6];
    value_bytes = atol(argv[7]);
    struct worker *ws = calloc(conns, sizeof *ws);
    double t0 = now();
    for (int i = 0; i < conns; i++) pthread_create(&ws[i].th, NULL, run, &ws[i]);
    usleep((useconds_t)(seconds * 1e6));
    stop = 1;
    long ops = 0, errors = 0;
    for (int i = 0; i < conns; i++) {
        pthread_join(ws[i].th, NULL);
        ops += ws[i].ops;
        errors += ws[i].errors;
    }
    double dt = now() - t0;
    printf("ops=%ld seconds=%.3f ops_per_s=%.0f errors=%ld\n", ops, dt, ops / dt, errors);
    return errors ? 1 : 0;
}
