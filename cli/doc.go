// Package cli owns the client side of the table service: Conn, a pipelined
// connection to one server; Client, which sends each request where a
// Resolver says writes or reads go; and Session, the command interpreter
// of table_client, with the course's commands, aliases and output, run
// interactively or from scripts.
package cli
