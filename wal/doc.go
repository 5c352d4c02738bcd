// Package wal owns a chain node's write-ahead log on disk: every
// replicated write the node applies, in sequence order, in segment files
// of CRC-framed records, with group commit (Syncer) so that one fsync
// covers many writes, and recovery that truncates a record torn by a
// crash and refuses any other damage. DESIGN.md gives the format, the
// recovery rules and what each fsync mode promises.
package wal
