package cluster

import (
	"bytes"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/chaintable/chaintable/internal/zktest"
)

// ZKMode asks the ZooKeeper server at addr for its mode with the srvr
// four-letter command: "leader", "follower" or "standalone" when it
// serves clients.
func ZKMode(addr string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("srvr")); err != nil {
		return "", err
	}
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(c); err != nil {
		return "", err
	}
	for line := range strings.Lines(buf.String()) {
		if mode, ok := strings.CutPrefix(line, "Mode: "); ok {
			return strings.TrimSpace(mode), nil
		}
	}
	return "", fmt.Errorf("no mode in %q", buf.String())
}

// ZKLeader waits until a member of the ensemble says it leads, and returns
// it. It fails the test after timeout.
func (c *Cluster) ZKLeader(timeout time.Duration) *zktest.Server {
	c.tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var modes []string
		for _, s := range c.zk {
			mode, err := ZKMode(s.Addr())
			if mode == "leader" || mode == "standalone" {
				return s
			}
			modes = append(modes, fmt.Sprintf("%s: %s%v", s.Addr(), mode, errOrNil(err)))
		}
		if time.Now().After(deadline) {
			c.tb.Fatalf("cluster: no ZooKeeper leader within %v: %s", timeout, strings.Join(modes, ", "))
		}
		time.Sleep(5 * pollInterval)
	}
}

func errOrNil(err error) string {
	if err == nil {
		return ""
	}
	return " " + err.Error()
}
