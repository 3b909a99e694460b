# Errors: the ErrorCode objects the codec raises ProtocolError with (looked up once, at import), the ERROR
# meta (u16 code, str message) and the complete error frame a node answers a bad request with.

cdef object BAD_FRAME = ErrorCode.BAD_FRAME
cdef object BAD_VERSION = ErrorCode.BAD_VERSION
cdef object TOO_LARGE = ErrorCode.TOO_LARGE
cdef object BAD_REQUEST = ErrorCode.BAD_REQUEST
cdef object UNKNOWN_OPCODE = ErrorCode.UNKNOWN_OPCODE


def encode_error(code, message) -> bytes:
    """Error response meta ``u16 code, str message``; the message is cut (at a character) to fit a str."""
    cdef uint16_t c = code
    cdef bytes m = str(message).encode("utf-8", "replace")
    cdef Py_ssize_t n = len(m)
    cdef const unsigned char* mp = <const unsigned char*>PyBytes_AS_STRING(m)
    if n > C_STR_MAX:
        n = C_STR_MAX
        while n > 0 and (mp[n] & 0xC0) == 0x80:  # do not split a UTF-8 sequence
            n -= 1
    cdef bytes out = _new(4 + n)
    rp_st16(_ptr(out), c)
    w_str(_ptr(out) + 2, <const char*>mp, n)
    return out


cdef object _error_fields(Cur* c, Py_ssize_t arg):
    code = r_u16(c, "code")
    message = r_str(c, "message", False)
    _finish(c)
    try:
        code = ErrorCode(code)
    except ValueError:
        pass
    return (code, message)


def decode_error(meta) -> tuple:
    """-> (code, message); code is an ErrorCode when known, else the int (a newer peer's code).

    Bad UTF-8 in the message is replaced rather than rejected: an error must always be reportable.
    """
    return _decode(meta, "ERROR", _error_fields)


def error_frame(uint8_t opcode, uint64_t request_id, code, message) -> bytes:
    """A complete error response: flags RESPONSE|ERROR, meta ``u16 code, str message``, no data."""
    return frame(opcode, FLAG_RESPONSE | FLAG_ERROR, request_id, encode_error(code, message), 0)
