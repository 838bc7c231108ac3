package qmp

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// FuzzQMPStream: everything SocketMonitor decodes comes from QEMU, a
// process the guest may have taken over. The fuzzer plays QEMU: greeting
// is its first message, stream what it sends after the reply to
// qmp_capabilities, once the monitor has sent one command (id "fuzz") and
// subscribed to events; then it closes the socket. Whatever the bytes,
// the monitor must not panic or hang: Connect fails or succeeds, the
// command gets a reply, a QMP error or a closed-connection error, the
// event channel closes, and afterwards Err wraps ErrClosed.
func FuzzQMPStream(f *testing.F) {
	greeting := []byte(`{"QMP": {"version": {"qemu": {"micro": 2, "minor": 1, "major": 9}, "package": "Debian 1:9.1.2"}, "capabilities": ["oob"]}}`)
	f.Add(greeting, []byte(`{"return": {"status": "running", "running": true}, "id": "fuzz"}`+"\n"))
	f.Add(greeting, []byte(`{"timestamp": {"seconds": 1700000000, "microseconds": 1}, "event": "STOP"}`+"\n"+
		`{"error": {"class": "GenericError", "desc": "nope"}, "id": "fuzz"}`+"\n"))
	f.Add(greeting, []byte(`{"id": "fuzz"}{"return": 1, "id": "fuzz"}`))
	f.Add(greeting, []byte(`{"event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-shutdown"}, "timestamp": {"seconds": -1, "microseconds": 99999999999}}`))
	f.Add(greeting, []byte(`[1, 2, 3] "x" 17 null {"return": {}} {"return": {}, "id": ["fuzz"]} {"return": {}, "id": "fu`))
	f.Add(greeting, []byte(`{"return": {}, "id": "fuzz", "error": {"class": "", "desc": ""}}`))
	f.Add(greeting, []byte(`{"event": 7}{"event": "X", "data": [1]}{"return": {}, "id": {"a": 1e999}}`))
	f.Add([]byte(`{"QMP": null}`), []byte(nil))
	f.Add([]byte(`{"QMP": {"version": {"qemu": {"major": "nine"}}}}`), []byte(nil))
	f.Add([]byte(`[]`), []byte(nil))
	f.Add([]byte(`{"QMP": {}`), []byte(nil))

	f.Fuzz(func(t *testing.T, greeting, stream []byte) {
		// QEMU's greeting is one JSON value: send the first one the
		// bytes hold, or all of them and close if they hold none.
		complete := false
		if d := json.NewDecoder(bytes.NewReader(greeting)); d.Decode(new(json.RawMessage)) == nil {
			greeting, complete = greeting[:d.InputOffset()], true
		}
		sock := filepath.Join(t.TempDir(), "q.sock")
		l, err := net.Listen("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		served := make(chan struct{})
		go func() {
			defer close(served)
			conn, err := l.Accept()
			if err != nil {
				return
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(10 * time.Second))
			conn.Write(greeting)
			if !complete {
				return
			}
			sc := bufio.NewScanner(conn)
			if !sc.Scan() { // qmp_capabilities
				return
			}
			var cmd struct {
				ID json.RawMessage `json:"id"`
			}
			json.Unmarshal(sc.Bytes(), &cmd)
			conn.Write(append([]byte(`{"return": {}, "id": `+string(cmd.ID)+`}`), '\n'))
			if !sc.Scan() { // the monitor's command
				return
			}
			conn.Write(stream)
		}()

		m, err := NewSocketMonitor("unix", sock, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Connect(); err != nil {
			<-served
			return
		}
		ev, err := m.Events(context.Background())
		if err != nil {
			t.Fatalf("events on a connected monitor: %v", err)
		}
		events := make(chan int)
		go func() {
			n := 0
			for e := range ev {
				_ = e.Time()
				n++
			}
			events <- n
		}()
		_, err = m.Run([]byte(`{"execute": "query-status", "id": "fuzz"}`))
		var qe *Error
		if err != nil && !errors.As(err, &qe) && !errors.Is(err, ErrClosed) && !strings.Contains(err.Error(), "reply has neither return nor error") {
			t.Fatalf("Run: %v is neither a reply, a QMP error nor a closed connection", err)
		}
		select {
		case <-m.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("the reader did not end after QEMU closed the socket")
		}
		select {
		case <-events:
		case <-time.After(5 * time.Second):
			t.Fatal("the event channel did not close with the connection")
		}
		if err := m.Err(); !errors.Is(err, ErrClosed) {
			t.Fatalf("Err after the end: %v", err)
		}
		m.Disconnect()
		<-served
	})
}
