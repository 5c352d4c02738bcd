// Package codec owns the wire format of the table service: the protobuf
// messages of sdmessage.proto (generated code in sdmessage.pb.go, made by
// `make proto`) and the length-prefixed framing that carries them.
//
// A frame is a uint16 big-endian length N followed by N bytes of payload,
// the course's framing. A payload of 65535 bytes or more is sent with
// N = 0xFFFF followed by a uint32 big-endian length, so large tables and
// values fit while course clients, which never send such frames, are
// unaffected.
package codec
