package pgtest

import (
	"net"
	"strconv"
	"testing"
	"time"
)

// TestStart: a cluster starts, listens on 127.0.0.1 only, restarts on the
// same port, and a second database can be made.
func TestStart(t *testing.T) {
	start := time.Now()
	c := StartCluster(t)
	t.Logf("cluster up in %v: port %d", time.Since(start).Round(time.Millisecond), c.Port)
	conn, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(c.Port)), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	if _, err := c.CreateDB("second"); err != nil {
		t.Fatal(err)
	}
	if err := c.Restart(); err != nil {
		t.Fatal(err)
	}
	conn, err = net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(c.Port)), 5*time.Second)
	if err != nil {
		t.Fatalf("after restart: %v", err)
	}
	conn.Close()
}
