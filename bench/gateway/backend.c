/*
 * The benchmark's HTTP backend: one thread, epoll, keep-alive and pipelining,
 * answering every request on a port with the same small body (the port's name).
 * Written in C so that the backend costs little beside the proxies measured:
 * the same backend serves the leafmesh gateway and haproxy.
 *
 *   cc -O2 -o backend backend.c && ./backend NAME:PORT [NAME:PORT ...]
 * prints "listening" when every port listens. Requests with a Content-Length
 * body are read past; chunked bodies are not supported (wrk sends none).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_PORTS 8
#define BUFFER 16384

struct listener { int fd; char response[256]; int length; };
struct connection { int fd; struct listener *listener; int used; long skip; char buffer[BUFFER]; };

static struct listener listeners[MAX_PORTS];

/* The Content-Length of the request head in [head, end), 0 when none. */
static long content_length(const char *head, const char *end) {
  for (const char *line = head; line < end; ) {
    const char *next = memmem(line, end - line, "\r\n", 2);
    if (!next) break;
    if (next - line > 15 && strncasecmp(line, "content-length:", 15) == 0) return atol(line + 15);
    line = next + 2;
  }
  return 0;
}

int main(int argc, char **argv) {
  int count = argc - 1;
  if (count < 1 || count > MAX_PORTS) { fprintf(stderr, "usage: backend NAME:PORT ...\n"); return 2; }
  int epoll = epoll_create1(0);
  for (int i = 0; i < count; i++) {
    char *colon = strrchr(argv[i + 1], ':');
    if (!colon) { fprintf(stderr, "bad NAME:PORT %s\n", argv[i + 1]); return 2; }
    *colon = 0;
    int port = atoi(colon + 1);
    int body = (int)strlen(argv[i + 1]) + 1;
    listeners[i].length = snprintf(listeners[i].response, sizeof listeners[i].response,
      "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s\n", body, argv[i + 1]);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in address = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    if (bind(fd, (struct sockaddr *)&address, sizeof address) != 0 || listen(fd, 4096) != 0) { perror("listen"); return 1; }
    listeners[i].fd = fd;
    struct epoll_event event = { .events = EPOLLIN, .data.ptr = &listeners[i] };
    epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &event);
  }
  printf("listening\n");
  fflush(stdout);
  struct epoll_event events[256];
  for (;;) {
    int ready = epoll_wait(epoll, events, 256, -1);
    if (ready < 0 && errno == EINTR) continue;
    for (int e = 0; e < ready; e++) {
      void *ptr = events[e].data.ptr;
      if (ptr >= (void *)listeners && ptr < (void *)(listeners + MAX_PORTS)) {
        struct listener *listener = ptr;
        for (;;) {
          int fd = accept4(listener->fd, NULL, NULL, SOCK_NONBLOCK);
          if (fd < 0) break;
          int one = 1;
          setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          struct connection *connection = calloc(1, sizeof *connection);
          connection->fd = fd;
          connection->listener = listener;
          struct epoll_event event = { .events = EPOLLIN, .data.ptr = connection };
          epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &event);
        }
        continue;
      }
      struct connection *connection = ptr;
      int closed = 0;
      for (;;) {
        ssize_t got = read(connection->fd, connection->buffer + connection->used, BUFFER - connection->used);
        if (got == 0 || (got < 0 && errno != EAGAIN && errno != EINTR)) { closed = 1; break; }
        if (got < 0) break;
        connection->used += (int)got;
        /* Answer every whole request in the buffer (pipelined ones in one write). */
        char out[BUFFER];
        int out_used = 0;
        int start = 0;
        for (;;) {
          if (connection->skip > 0) {
            long take = connection->used - start < connection->skip ? connection->used - start : connection->skip;
            start += (int)take;
            connection->skip -= take;
            if (connection->skip > 0) break;
          }
          char *end = memmem(connection->buffer + start, connection->used - start, "\r\n\r\n", 4);
          if (!end) break;
          connection->skip = content_length(connection->buffer + start, end + 2);
          start = (int)(end + 4 - connection->buffer);
          if (out_used + connection->listener->length > BUFFER) break;
          memcpy(out + out_used, connection->listener->response, connection->listener->length);
          out_used += connection->listener->length;
        }
        memmove(connection->buffer, connection->buffer + start, connection->used - start);
        connection->used -= start;
        if (connection->used == BUFFER) { closed = 1; break; } /* a head longer than the buffer */
        if (out_used > 0 && write(connection->fd, out, out_used) != out_used) { closed = 1; break; }
      }
      if (closed) {
        close(connection->fd);
        free(connection);
      }
    }
  }
}
