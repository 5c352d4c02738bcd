// Package perf owns load generation and measurement for the table service
// and, for comparison, Redis: the closed-loop load generator (Run), its
// workloads and key distributions, the allocation-free wire encoders and
// reply validators of both protocols (the chaintable frame format and a
// minimal RESP codec), the latency histograms, and the reports that
// table_perf prints as text, JSON or a comparison table.
//
// # Load model
//
// Run opens Config.Conns connections. One goroutine drives each of them in
// a closed loop: it encodes a batch of Config.Pipeline requests into one
// buffer, sends it with a single write, then reads the batch's replies in
// order through a bufio.Reader and validates every one before it sends the
// next batch. Against a chain a worker keeps one connection to the head,
// for writes, and one to the tail, for reads (a single one when they are
// the same server); a batch of a mixed workload is split between them.
//
// # Latency
//
// The latency of a request is the time from the moment its batch is handed
// to the kernel (just before the first write of the batch) to the moment
// its reply has been read and validated. With Pipeline 1 that is the round
// trip of one request; with Pipeline P a request's latency includes the
// time the server spent on the requests ahead of it in the batch, which is
// what a pipelining client observes. Against a chain with a mixed
// workload, the replies from the tail (reads) are read before those from
// the head (writes). Latencies go into an HDR histogram (3 significant
// digits) per worker; the histograms are merged at the end.
//
// # Replies
//
// Every reply is validated: its opcode and content type (or RESP type),
// and for a get the length of the value, which must be Config.ValueSize.
// A get or del of a missing key is a miss, counted apart from errors,
// unless the key space was preloaded and the workload never deletes, in
// which case every key exists and a miss is an error. Any other failure,
// including requests left unanswered by a broken or timed-out connection,
// is an error, counted by reason.
package perf
