# cython: language_level=3, boundscheck=False, wraparound=False
"""Zero-copy sends of user memory to a TCP socket: vmsplice(2) into a pipe, splice(2) from it to the socket.

A plain send copies every byte into socket buffers; on a 2-core machine that copy is most of a pushing
client's CPU. vmsplice hands the kernel references to the pages instead, and splice moves those references
into the socket's queue, so the only copy left is the receiver's. The price: the kernel reads the caller's
pages *after* the call returns, until the receiver has taken them. A caller may reuse the memory only once
the peer has acknowledged the bytes (an RPMP PUSH is answered only after the node received, verified and
persisted all of it); a change before that reaches the node as different bytes, which its checksum check
rejects (CHECKSUM_MISMATCH), never as silent data.

    Pipe() -> object with .send(sock_fd, buf, timeout_ms) and .close()
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from posix.unistd cimport close as c_close

cdef extern from *:
    """
    #ifndef _GNU_SOURCE
    #define _GNU_SOURCE
    #endif
    #include <errno.h>
    #include <fcntl.h>
    #include <poll.h>
    #include <sys/uio.h>
    #include <unistd.h>

    /* Send len bytes at p to sock through the pipe (fds[0] read end, fds[1] write end, capacity cap).
       Returns bytes sent (== len) or -errno; -ETIMEDOUT if the socket took nothing for timeout_ms.
       On error a part may have been sent: the connection cannot be trusted any more. */
    static long long rp_splice_send(int sock, const int* fds, size_t cap, const char* p, size_t len,
                                    int timeout_ms) {
        size_t done = 0;
        while (done < len) {
            size_t want = len - done < cap ? len - done : cap;
            struct iovec iov = { (void*)(p + done), want };
            ssize_t in = vmsplice(fds[1], &iov, 1, 0);
            if (in < 0) {
                if (errno == EINTR) continue;
                return -errno;
            }
            size_t left = (size_t)in;
            while (left > 0) {
                /* MORE (like MSG_MORE) except for the last bytes: the tail must not wait for a cork timer */
                unsigned int more = done + (size_t)in < len ? SPLICE_F_MORE : 0;
                ssize_t out = splice(fds[0], NULL, sock, NULL, left, SPLICE_F_MOVE | SPLICE_F_NONBLOCK | more);
                if (out < 0) {
                    if (errno == EINTR) continue;
                    if (errno != EAGAIN) return -errno;
                    struct pollfd pfd = { sock, POLLOUT, 0 };
                    int r = poll(&pfd, 1, timeout_ms);
                    if (r == 0) return -ETIMEDOUT;
                    if (r < 0 && errno != EINTR) return -errno;
                    if (r > 0 && (pfd.revents & (POLLERR | POLLHUP | POLLNVAL))) return -EPIPE;
                    continue;
                }
                left -= (size_t)out;
            }
            done += (size_t)in;
        }
        return (long long)done;
    }
    """
    long long rp_splice_send(int sock, const int* fds, size_t cap, const char* p, size_t length,
                             int timeout_ms) nogil

import errno as _errno
import fcntl as _fcntl
import os as _os

PIPE_SIZE = 1 << 20  # pages moved per vmsplice/splice pair (the default pipe-max-size; 64 KiB if refused)


cdef class Pipe:
    """A pipe for zero-copy sends from one thread (one per connection). A failed send closes it."""

    cdef int fds[2]
    cdef size_t cap
    cdef bint is_closed

    def __cinit__(self):
        r, w = _os.pipe2(_os.O_CLOEXEC)
        self.fds[0] = r
        self.fds[1] = w
        self.is_closed = False
        try:
            self.cap = _fcntl.fcntl(w, 1031, PIPE_SIZE)  # F_SETPIPE_SZ
        except OSError:
            self.cap = _fcntl.fcntl(w, 1032)  # F_GETPIPE_SZ

    @property
    def capacity(self) -> int:
        return self.cap

    def send(self, int sock_fd, data, int timeout_ms) -> int:
        """Send all of `data` (any C-contiguous buffer) to the socket; OSError on failure (then part of it
        may have been sent). The caller must not change `data` until the peer acknowledged it."""
        cdef Py_buffer view
        cdef long long n
        if self.is_closed:
            raise ValueError("pipe is closed")
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            with nogil:
                n = rp_splice_send(sock_fd, self.fds, self.cap, <const char*>view.buf, <size_t>view.len,
                                   timeout_ms)
        finally:
            PyBuffer_Release(&view)
        if n < 0:
            self.close()  # bytes may be left in the pipe: it cannot carry another send
            code = <int>-n
            if code == _errno.ETIMEDOUT:
                raise TimeoutError(code, f"socket took nothing for {timeout_ms} ms")
            raise OSError(code, _os.strerror(code))
        return n

    @property
    def closed(self) -> bool:
        return self.is_closed

    def close(self) -> None:
        if not self.is_closed:
            self.is_closed = True
            c_close(self.fds[0])
            c_close(self.fds[1])

    def __dealloc__(self):
        if not self.is_closed:
            c_close(self.fds[0])
            c_close(self.fds[1])
