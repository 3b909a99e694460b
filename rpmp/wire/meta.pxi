# Tools: MetaWriter builds a meta (or a whole frame) field by field and MetaReader reads one, with the
# codec's bounds checks and messages; for tests, fuzzers and frames of opcodes the codec does not know.

cdef class MetaWriter:
    """A growing little-endian buffer for meta, for tools and tests that build frames field by field.

    The opcode encoders below do not use it (they size their output exactly); it is the way to build a
    deliberately odd frame, or a frame of a future opcode. It keeps 32 bytes in front of the meta so that
    ``frame()`` returns header + meta without another copy.
    """

    cdef unsigned char* buf
    cdef Py_ssize_t length  # including the reserved header room
    cdef Py_ssize_t cap

    def __cinit__(self, Py_ssize_t capacity=256):
        self.cap = max(capacity, 64) + C_HEADER_SIZE
        self.buf = <unsigned char*>malloc(self.cap)
        if self.buf == NULL:
            raise MemoryError()
        self.length = C_HEADER_SIZE

    def __dealloc__(self):
        free(self.buf)

    cdef unsigned char* _grow(self, Py_ssize_t k) except NULL:
        cdef Py_ssize_t cap = self.cap
        cdef unsigned char* nb
        if self.length + k > cap:
            while self.length + k > cap:
                cap *= 2
            nb = <unsigned char*>realloc(self.buf, cap)
            if nb == NULL:
                raise MemoryError()
            self.buf = nb
            self.cap = cap
        cdef unsigned char* p = self.buf + self.length
        self.length += k
        return p

    def __len__(self) -> int:
        return self.length - C_HEADER_SIZE

    def u8(self, uint8_t v) -> None:
        self._grow(1)[0] = v

    def u16(self, uint16_t v) -> None:
        rp_st16(self._grow(2), v)

    def u32(self, uint32_t v) -> None:
        rp_st32(self._grow(4), v)

    def u64(self, uint64_t v) -> None:
        rp_st64(self._grow(8), v)

    def i32(self, int v) -> None:
        rp_st32(self._grow(4), <uint32_t>v)

    def i64(self, long long v) -> None:
        rp_st64(self._grow(8), <uint64_t>v)

    def str(self, s) -> None:
        """`u16 length` + UTF-8 bytes (bytes are written as given: for building invalid frames)."""
        cdef Py_ssize_t n
        cdef const char* p = _str_arg(s, &n, "str")
        w_str(self._grow(2 + n), p, n)

    def bytes(self, b) -> None:
        """`u32 length` + the bytes."""
        cdef Py_buffer view
        PyObject_GetBuffer(b, &view, PyBUF_SIMPLE)
        try:
            p = self._grow(4 + view.len)
            rp_st32(p, <uint32_t>view.len)
            memcpy(p + 4, view.buf, view.len)
        finally:
            PyBuffer_Release(&view)

    def raw(self, b) -> None:
        """Bytes with no length prefix."""
        cdef Py_buffer view
        PyObject_GetBuffer(b, &view, PyBUF_SIMPLE)
        try:
            memcpy(self._grow(view.len), view.buf, view.len)
        finally:
            PyBuffer_Release(&view)

    def u64_list(self, values) -> None:
        """`u32 count` + that many u64."""
        cdef list vs = list(values)
        rp_st32(self._grow(4), <uint32_t>len(vs))
        cdef uint64_t v
        for x in vs:
            v = x
            rp_st64(self._grow(8), v)

    def node(self, node) -> None:
        """A `Node` (or a (node_id, host, port, state) tuple)."""
        cdef tuple t = _node_fields(node)
        _w_node(self._grow(_node_size(t, "node")), t, "node")

    def getvalue(self) -> bytes:
        """The meta written so far."""
        return PyBytes_FromStringAndSize(<char*>self.buf + C_HEADER_SIZE, self.length - C_HEADER_SIZE)

    def frame(self, uint8_t opcode, uint16_t flags, uint64_t request_id, uint64_t data_len=0) -> bytes:
        """Header + the meta written so far (meta_len is not limited here: tests build oversized frames)."""
        _fill_header(self.buf, opcode, flags, request_id, <uint32_t>(self.length - C_HEADER_SIZE), data_len)
        return PyBytes_FromStringAndSize(<char*>self.buf, self.length)


cdef class MetaReader:
    """Bounds-checked reads over any buffer, raising ProtocolError like the opcode decoders do.

    ``what`` prefixes error messages (e.g. "PUSH"). The reader holds a buffer export on `buf` until
    ``finish()`` or ``close()`` (a bytearray cannot be resized meanwhile).
    """

    cdef Py_buffer view
    cdef Cur c
    cdef bytes _what
    cdef bint held

    def __cinit__(self, buf, what: str = "meta"):
        self._what = what.encode("ascii", "replace")
        PyObject_GetBuffer(buf, &self.view, PyBUF_SIMPLE)
        self.held = True
        self.c.p = <const unsigned char*>self.view.buf
        self.c.n = self.view.len
        self.c.pos = 0
        self.c.what = self._what

    def __dealloc__(self):
        if self.held:
            PyBuffer_Release(&self.view)

    cdef int _check(self) except -1:
        if not self.held:
            raise ValueError("MetaReader is closed")
        return 0

    @property
    def pos(self) -> int:
        return self.c.pos

    @property
    def remaining(self) -> int:
        return self.c.n - self.c.pos

    def u8(self, field: str = "u8") -> int:
        self._check()
        return self._rd(field, 1)

    def u16(self, field: str = "u16") -> int:
        self._check()
        return self._rd(field, 2)

    def u32(self, field: str = "u32") -> int:
        self._check()
        return self._rd(field, 4)

    def u64(self, field: str = "u64") -> int:
        self._check()
        return self._rd(field, 8)

    def i32(self, field: str = "i32") -> int:
        v = self.u32(field)
        return v - (1 << 32) if v >= (1 << 31) else v

    def i64(self, field: str = "i64") -> int:
        v = self.u64(field)
        return v - (1 << 64) if v >= (1 << 63) else v

    cdef object _rd(self, str field, int size):
        cdef bytes f = field.encode("ascii", "replace")
        if size == 1:
            return r_u8(&self.c, f)
        if size == 2:
            return r_u16(&self.c, f)
        if size == 4:
            return r_u32(&self.c, f)
        return r_u64(&self.c, f)

    def str(self, field: str = "str", strict: bool = True) -> str:
        self._check()
        cdef bytes f = field.encode("ascii", "replace")
        return r_str(&self.c, f, strict)

    def bytes(self, field: str = "bytes") -> bytes:
        self._check()
        cdef bytes f = field.encode("ascii", "replace")
        return r_bytes(&self.c, f)

    def raw(self, Py_ssize_t n, field: str = "raw") -> bytes:
        self._check()
        cdef bytes f = field.encode("ascii", "replace")
        if n < 0:
            raise ValueError("negative length")
        _need(&self.c, n, f)
        b = PyBytes_FromStringAndSize(<char*>(self.c.p + self.c.pos), n)
        self.c.pos += n
        return b

    def u64_list(self, field: str = "list") -> list:
        self._check()
        cdef bytes f = field.encode("ascii", "replace")
        return r_u64_list(&self.c, f)

    def app(self, field: str = "app") -> str:
        """A `str` that must follow the application-name rules (BAD_REQUEST otherwise)."""
        self._check()
        cdef bytes f = field.encode("ascii", "replace")
        return r_app(&self.c, f)

    def key(self, field: str = "key") -> bytes:
        """A `bytes` that must be a valid key, 1..160 bytes (BAD_REQUEST otherwise)."""
        self._check()
        cdef bytes f = field.encode("ascii", "replace")
        return r_key(&self.c, f)

    def node(self) -> Node:
        self._check()
        return r_node(&self.c)

    def close(self) -> None:
        """Release the buffer without checking for trailing bytes."""
        if self.held:
            self.held = False
            PyBuffer_Release(&self.view)

    def finish(self) -> None:
        """Release the buffer; BAD_FRAME if bytes are left over (a meta must be consumed exactly)."""
        self._check()
        try:
            _finish(&self.c)
        finally:
            self.close()
