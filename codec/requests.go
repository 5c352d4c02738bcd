package codec

// Short names for the generated enums, so callers read like the protocol.
const (
	OpBad      = MessageT_OP_BAD
	OpPut      = MessageT_OP_PUT
	OpGet      = MessageT_OP_GET
	OpDel      = MessageT_OP_DEL
	OpSize     = MessageT_OP_SIZE
	OpGetKeys  = MessageT_OP_GETKEYS
	OpGetTable = MessageT_OP_GETTABLE
	OpStats    = MessageT_OP_STATS
	OpError    = MessageT_OP_ERROR

	CtBad    = MessageT_CT_BAD
	CtEntry  = MessageT_CT_ENTRY
	CtKey    = MessageT_CT_KEY
	CtValue  = MessageT_CT_VALUE
	CtResult = MessageT_CT_RESULT
	CtKeys   = MessageT_CT_KEYS
	CtTable  = MessageT_CT_TABLE
	CtNone   = MessageT_CT_NONE
	CtStats  = MessageT_CT_STATS
)

// DedupWindow is how many writes a client that sets ids may have in
// flight: a server keeps the outcomes of request ids from the client's
// first_unacked up to DedupWindow-1 above it.
const DedupWindow = 64

// ReplyOf returns the opcode and content type of a successful reply to a
// request with opcode op: the request's opcode plus one, and the content
// type the course protocol fixes for it. ok is false for opcodes that are
// not requests.
func ReplyOf(op MessageT_Opcode) (reply MessageT_Opcode, ct MessageT_CType, ok bool) {
	switch op {
	case OpPut, OpDel:
		return op + 1, CtNone, true
	case OpGet:
		return op + 1, CtValue, true
	case OpSize:
		return op + 1, CtResult, true
	case OpGetKeys:
		return op + 1, CtKeys, true
	case OpGetTable:
		return op + 1, CtTable, true
	case OpStats:
		return op + 1, CtStats, true
	}
	return OpBad, CtBad, false
}

// IsWrite reports whether op changes the table.
func IsWrite(op MessageT_Opcode) bool { return op == OpPut || op == OpDel }

// PutRequest returns a put of value under key.
func PutRequest(key string, value []byte) *MessageT {
	return &MessageT{Opcode: OpPut, CType: CtEntry, Entry: &EntryT{Key: key, Value: value}}
}

// GetRequest returns a get of key.
func GetRequest(key string) *MessageT {
	return &MessageT{Opcode: OpGet, CType: CtKey, Key: key}
}

// DelRequest returns a del of key.
func DelRequest(key string) *MessageT {
	return &MessageT{Opcode: OpDel, CType: CtKey, Key: key}
}

// Request returns a request without arguments: size, getkeys, gettable or stats.
func Request(op MessageT_Opcode) *MessageT {
	return &MessageT{Opcode: op, CType: CtNone}
}

// ErrorReply returns the reply to any request that failed.
func ErrorReply() *MessageT {
	return &MessageT{Opcode: OpError, CType: CtNone}
}

// WriteOf returns the write that a put or del request asks for.
func WriteOf(req *MessageT) *WriteT {
	w := &WriteT{Op: req.GetOpcode(), Key: req.GetKey(), ClientId: req.GetClientId(), RequestId: req.GetRequestId(), FirstUnacked: req.GetFirstUnacked()}
	if w.Op == OpPut {
		w.Key, w.Value = req.GetEntry().GetKey(), req.GetEntry().GetValue()
	}
	return w
}

// NotTaken reports whether a request answered with status s was declined
// without being executed, because of where or when it arrived, so that it
// may be sent again, elsewhere or later, without risk of doing it twice.
func NotTaken(s Status) bool {
	switch s {
	case Status_STATUS_NOT_HEAD, Status_STATUS_NOT_TAIL, Status_STATUS_UNAVAILABLE,
		Status_STATUS_STALE_CONFIG, Status_STATUS_DISK_FAILED:
		return true
	}
	return false
}
