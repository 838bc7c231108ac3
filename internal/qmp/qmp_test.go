package qmp

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// peer is the fake QEMU's side of one connection.
type peer struct {
	conn net.Conn
	mu   sync.Mutex
	enc  *json.Encoder
}

func (p *peer) send(v any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.enc.Encode(v)
}

func (p *peer) reply(cmd map[string]any, ret any) {
	p.send(map[string]any{"return": ret, "id": cmd["id"]})
}

func (p *peer) event(name string, data any) {
	p.send(map[string]any{"event": name, "data": data,
		"timestamp": map[string]int64{"seconds": 1700000000, "microseconds": 42}})
}

var qemu912 = map[string]any{"QMP": map[string]any{
	"version":      map[string]any{"qemu": map[string]int{"major": 9, "minor": 1, "micro": 2}, "package": "fake"},
	"capabilities": []string{"oob"}}}

// fakeQEMU serves QMP on a unix socket in t.TempDir(): it sends greeting,
// answers qmp_capabilities, and hands every other command to handle.
// handle returning false closes the connection (QEMU dying).
func fakeQEMU(t *testing.T, greeting any, handle func(p *peer, cmd map[string]any) bool) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "qmp.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				p := &peer{conn: conn, enc: json.NewEncoder(conn)}
				p.send(greeting)
				sc := bufio.NewScanner(conn)
				for sc.Scan() {
					var cmd map[string]any
					if json.Unmarshal(sc.Bytes(), &cmd) != nil {
						p.send(map[string]any{"error": map[string]any{"class": "GenericError", "desc": "JSON parse error"}})
						continue
					}
					if cmd["execute"] == "qmp_capabilities" {
						p.reply(cmd, map[string]any{})
						continue
					}
					if !handle(p, cmd) {
						return
					}
				}
			}()
		}
	}()
	return sock
}

func connect(t *testing.T, sock string, timeout time.Duration) *SocketMonitor {
	t.Helper()
	m, err := NewSocketMonitor("unix", sock, timeout)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Connect(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Disconnect() })
	return m
}

func TestGreetingAndVersion(t *testing.T) {
	sock := fakeQEMU(t, qemu912, func(p *peer, cmd map[string]any) bool {
		p.reply(cmd, map[string]any{"status": "running", "running": true})
		return true
	})
	m := connect(t, sock, 2*time.Second)
	if maj, min, mic := m.Version(); maj != 9 || min != 1 || mic != 2 {
		t.Errorf("version %d.%d.%d, want 9.1.2", maj, min, mic)
	}
	if m.Package() != "fake" || len(m.Capabilities()) != 1 || m.Capabilities()[0] != "oob" {
		t.Errorf("package %q capabilities %v", m.Package(), m.Capabilities())
	}
	if err := m.Connect(); err == nil {
		t.Error("second Connect on a live monitor succeeded")
	}
	if m.Err() != nil {
		t.Errorf("Err while connected: %v", m.Err())
	}
}

func TestNotQMP(t *testing.T) {
	sock := fakeQEMU(t, map[string]any{"hello": "world"}, func(*peer, map[string]any) bool { return true })
	m, _ := NewSocketMonitor("unix", sock, time.Second)
	if err := m.Connect(); err == nil || !strings.Contains(err.Error(), "not a QMP greeting") {
		t.Errorf("Connect to a non-QMP peer: %v", err)
	}
	if _, err := m.Run([]byte(`{"execute":"query-status"}`)); !errors.Is(err, ErrClosed) {
		t.Errorf("Run on a monitor that never connected: %v", err)
	}
	if _, err := NewSocketMonitor("udp", sock, 0); err == nil {
		t.Error("udp accepted")
	}
}

func TestCapabilitiesRefused(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "qmp.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		conn, err := l.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		enc := json.NewEncoder(conn)
		enc.Encode(qemu912)
		sc := bufio.NewScanner(conn)
		for sc.Scan() {
			var cmd map[string]any
			json.Unmarshal(sc.Bytes(), &cmd)
			enc.Encode(map[string]any{"error": map[string]any{"class": "CommandNotFound", "desc": "Capabilities negotiation is already complete"}, "id": cmd["id"]})
		}
	}()
	m, _ := NewSocketMonitor("unix", sock, time.Second)
	err = m.Connect()
	var qe *Error
	if !errors.As(err, &qe) || qe.Class != "CommandNotFound" {
		t.Errorf("Connect: %v", err)
	}
}

// TestEventBeforeReply: system_powerdown's POWERDOWN arrives before the
// command's reply, as with real QEMU; it must neither be taken for the reply
// nor be lost.
func TestEventBeforeReply(t *testing.T) {
	sock := fakeQEMU(t, qemu912, func(p *peer, cmd map[string]any) bool {
		switch cmd["execute"] {
		case "system_powerdown":
			p.event("POWERDOWN", nil)
			p.reply(cmd, map[string]any{})
		case "query-status":
			p.event("RTC_CHANGE", map[string]any{"offset": 0})
			p.reply(cmd, map[string]any{"status": "running", "running": true})
		default:
			p.send(map[string]any{"error": map[string]any{"class": "CommandNotFound",
				"desc": fmt.Sprintf("The command %s has not been found", cmd["execute"])}, "id": cmd["id"]})
		}
		return true
	})
	m := connect(t, sock, 2*time.Second)
	events, err := m.Events(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ret, err := m.Run([]byte(`{"execute":"system_powerdown"}`))
	if err != nil || string(ret) != "{}" {
		t.Fatalf("system_powerdown: %s %v", ret, err)
	}
	select {
	case ev := <-events:
		if ev.Event != "POWERDOWN" || ev.Time().Unix() != 1700000000 {
			t.Errorf("event %+v", ev)
		}
	case <-time.After(time.Second):
		t.Fatal("the event that came before the reply was lost")
	}
	var st struct {
		Status  string `json:"status"`
		Running bool   `json:"running"`
	}
	if err := m.Execute(context.Background(), "query-status", nil, &st); err != nil || st.Status != "running" || !st.Running {
		t.Errorf("query-status: %v %+v", err, st)
	}
	if ev := <-events; ev.Event != "RTC_CHANGE" || ev.Data["offset"] != float64(0) {
		t.Errorf("event %+v", ev)
	}

	// Error replies keep QEMU's class and description.
	_, err = m.Run([]byte(`{"execute":"nope"}`))
	var qe *Error
	if !errors.As(err, &qe) || qe.Class != "CommandNotFound" || qe.Desc != "The command nope has not been found" {
		t.Errorf("error reply: %v", err)
	}
	if err := m.Execute(context.Background(), "nope", map[string]int{"x": 1}, nil); !errors.As(err, &qe) {
		t.Errorf("Execute error reply: %v", err)
	}
	if _, err := m.Run([]byte(`{"arguments":{}}`)); err == nil {
		t.Error("command without execute accepted")
	}
	if _, err := m.Run([]byte(`[1]`)); err == nil {
		t.Error("non-object command accepted")
	}
}

// TestOutOfOrderReplies: concurrent commands answered in reverse order each
// get their own reply.
func TestOutOfOrderReplies(t *testing.T) {
	const n = 8
	var mu sync.Mutex
	var held []map[string]any
	sock := fakeQEMU(t, qemu912, func(p *peer, cmd map[string]any) bool {
		mu.Lock()
		defer mu.Unlock()
		held = append(held, cmd)
		if len(held) == n {
			for i := n - 1; i >= 0; i-- {
				if i%3 == 0 {
					p.event("NOISE", map[string]any{"i": i})
				}
				p.reply(held[i], held[i]["arguments"])
			}
		}
		return true
	})
	m := connect(t, sock, 5*time.Second)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			var out map[string]int
			if err := m.Execute(context.Background(), "echo", map[string]int{"n": i}, &out); err != nil || out["n"] != i {
				t.Errorf("%d got %v %v", i, out, err)
			}
		}(i)
	}
	wg.Wait()
}

// TestCallerID: a command's own id is used and echoed; a duplicate of a
// pending id is refused.
func TestCallerID(t *testing.T) {
	release := make(chan struct{})
	sock := fakeQEMU(t, qemu912, func(p *peer, cmd map[string]any) bool {
		go func() {
			if cmd["execute"] == "slow" {
				<-release
			}
			p.reply(cmd, map[string]any{"id-seen": cmd["id"]})
		}()
		return true
	})
	m := connect(t, sock, 2*time.Second)
	ret, err := m.Run([]byte(`{"execute":"x","id":"mine"}`))
	if err != nil || string(ret) != `{"id-seen":"mine"}` {
		t.Fatalf("%s %v", ret, err)
	}
	ret, err = m.Run([]byte(`{"execute":"x","id":7}`))
	if err != nil || string(ret) != `{"id-seen":7}` {
		t.Fatalf("%s %v", ret, err)
	}
	b, _ := json.Marshal(Command{Execute: "x", Args: map[string]int{"a": 1}})
	if ret, err = m.Run(b); err != nil || !strings.HasPrefix(string(ret), `{"id-seen":"flare-`) {
		t.Fatalf("Command: %s %v", ret, err)
	}
	done := make(chan error, 1)
	go func() { _, err := m.Run([]byte(`{"execute":"slow","id":"dup"}`)); done <- err }()
	time.Sleep(50 * time.Millisecond)
	if _, err := m.Run([]byte(`{"execute":"x","id":"dup"}`)); err == nil || !strings.Contains(err.Error(), "already in use") {
		t.Errorf("duplicate id: %v", err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Error(err)
	}
}

// TestServerDiesMidCall: QEMU closes the socket while a command waits; the
// command fails with a clear error wrapping ErrClosed, subscribers' channels
// close, and later commands fail the same way.
func TestServerDiesMidCall(t *testing.T) {
	sock := fakeQEMU(t, qemu912, func(p *peer, cmd map[string]any) bool {
		if cmd["execute"] == "hang" {
			time.Sleep(100 * time.Millisecond)
			return false // die without replying
		}
		p.reply(cmd, map[string]any{})
		return true
	})
	m := connect(t, sock, 5*time.Second)
	events, _ := m.Events(context.Background())
	start := time.Now()
	_, err := m.Run([]byte(`{"execute":"hang"}`))
	if !errors.Is(err, ErrClosed) || !strings.Contains(err.Error(), "hang") || !strings.Contains(err.Error(), "EOF") {
		t.Errorf("pending command got %v, want ErrClosed naming the command and EOF", err)
	}
	if time.Since(start) > 2*time.Second {
		t.Errorf("pending command failed only after %s", time.Since(start))
	}
	t.Logf("pending command error: %v", err)
	select {
	case _, ok := <-events:
		if ok {
			t.Error("event after death")
		}
	case <-time.After(time.Second):
		t.Error("event channel not closed after the connection died")
	}
	select {
	case <-m.Done():
	case <-time.After(time.Second):
		t.Error("Done not closed")
	}
	if !errors.Is(m.Err(), ErrClosed) {
		t.Errorf("Err: %v", m.Err())
	}
	if _, err := m.Run([]byte(`{"execute":"query-status"}`)); !errors.Is(err, ErrClosed) {
		t.Errorf("command after death: %v", err)
	}
	if _, err := m.Events(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Events after death: %v", err)
	}
	// The fake accepts again (like a restarted QEMU): reconnecting works.
	if err := m.Connect(); err != nil {
		t.Fatalf("reconnect: %v", err)
	}
	if _, err := m.Run([]byte(`{"execute":"query-status"}`)); err != nil {
		t.Errorf("after reconnect: %v", err)
	}
}

// TestDisconnect ends pending commands, subscribers and the reader.
func TestDisconnect(t *testing.T) {
	sock := fakeQEMU(t, qemu912, func(*peer, map[string]any) bool { return true }) // never answers
	m := connect(t, sock, 0)
	events, _ := m.Events(context.Background())
	done := make(chan error, 1)
	go func() { _, err := m.Run([]byte(`{"execute":"hang"}`)); done <- err }()
	time.Sleep(50 * time.Millisecond)
	if err := m.Disconnect(); err != nil {
		t.Errorf("Disconnect: %v", err)
	}
	if err := <-done; !errors.Is(err, ErrClosed) || !strings.Contains(err.Error(), "Disconnect") {
		t.Errorf("pending command after Disconnect: %v", err)
	}
	if _, ok := <-events; ok {
		t.Error("event channel open after Disconnect")
	}
	if err := m.Disconnect(); err != nil {
		t.Errorf("second Disconnect: %v", err)
	}
}

func TestTimeoutAndContext(t *testing.T) {
	sock := fakeQEMU(t, qemu912, func(p *peer, cmd map[string]any) bool {
		if cmd["execute"] == "late" {
			go func() { time.Sleep(300 * time.Millisecond); p.reply(cmd, "late") }()
			return true
		}
		if cmd["execute"] == "now" {
			p.reply(cmd, "now")
		}
		return true
	})
	m := connect(t, sock, 200*time.Millisecond)
	if _, err := m.Run([]byte(`{"execute":"late"}`)); err == nil || !strings.Contains(err.Error(), "no reply within") {
		t.Errorf("timeout: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := m.Execute(ctx, "hang", nil, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("context: %v", err)
	}
	time.Sleep(300 * time.Millisecond) // the late reply arrives and is discarded
	var s string
	if err := m.Execute(context.Background(), "now", nil, &s); err != nil || s != "now" {
		t.Errorf("after a discarded late reply: %q %v", s, err)
	}
	m.mu.Lock()
	n := len(m.pending)
	m.mu.Unlock()
	if n != 0 {
		t.Errorf("%d pending calls leaked", n)
	}
}

// TestEventOverflow: a subscriber that does not read keeps the newest
// events; the rest are dropped and counted.
func TestEventOverflow(t *testing.T) {
	const sent = 300
	sock := fakeQEMU(t, qemu912, func(p *peer, cmd map[string]any) bool {
		for i := 0; i < sent; i++ {
			p.event("TICK", map[string]any{"i": i})
		}
		p.reply(cmd, map[string]any{})
		return true
	})
	m, _ := NewSocketMonitor("unix", sock, 2*time.Second)
	m.EventBuffer = 100
	if err := m.Connect(); err != nil {
		t.Fatal(err)
	}
	defer m.Disconnect()
	slow, _ := m.Events(context.Background())
	ctx, cancel := context.WithCancel(context.Background())
	fast, _ := m.Events(ctx)
	var got int
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ev := range fast {
			if int(ev.Data["i"].(float64)) == sent-1 {
				cancel()
			}
			got++
		}
	}()
	if _, err := m.Run([]byte(`{"execute":"burst"}`)); err != nil {
		t.Fatal(err)
	}
	wg.Wait() // fast's channel closes when its context ends
	if len(slow) != 100 {
		t.Fatalf("slow subscriber holds %d events, want 100", len(slow))
	}
	first := <-slow
	if i := int(first.Data["i"].(float64)); i != sent-100 {
		t.Errorf("oldest kept event %d, want %d", i, sent-100)
	}
	if d := m.Dropped(); d < sent-100 {
		t.Errorf("Dropped %d, want >= %d", d, sent-100)
	}
	t.Logf("fast subscriber got %d of %d, dropped total %d", got, sent, m.Dropped())
}

// TestRealQEMU drives a real QEMU without a guest: query-version,
// query-status, then quit and the SHUTDOWN event.
func TestRealQEMU(t *testing.T) {
	bin, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		if os.Getenv("QMP_REQUIRE_QEMU") != "" {
			t.Fatal("qemu-system-x86_64 not found and QMP_REQUIRE_QEMU is set")
		}
		t.Skip("qemu-system-x86_64 not found: install Debian's qemu-system-x86 (make agent-deps) to run the real-QEMU QMP test")
	}
	sock := filepath.Join(t.TempDir(), "qmp.sock")
	cmd := exec.Command(bin, "-machine", "none", "-nodefaults", "-display", "none",
		"-qmp", "unix:"+sock+",server=on,wait=off")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	m, _ := NewSocketMonitor("unix", sock, 5*time.Second)
	start := time.Now()
	for {
		if err = m.Connect(); err == nil {
			break
		}
		if time.Since(start) > 10*time.Second {
			t.Fatalf("connect: %v; qemu stderr: %s", err, stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("QMP ready %s after start", time.Since(start).Round(time.Millisecond))
	defer m.Disconnect()
	maj, min, mic := m.Version()
	t.Logf("greeting: QEMU %d.%d.%d (%s), capabilities %v", maj, min, mic, m.Package(), m.Capabilities())
	ctx := context.Background()
	var v struct {
		QEMU struct{ Major, Minor, Micro int } `json:"qemu"`
	}
	if err := m.Execute(ctx, "query-version", nil, &v); err != nil || v.QEMU.Major != maj || v.QEMU.Minor != min {
		t.Fatalf("query-version: %v %+v (greeting %d.%d)", err, v, maj, min)
	}
	var st struct {
		Status  string `json:"status"`
		Running bool   `json:"running"`
	}
	if err := m.Execute(ctx, "query-status", nil, &st); err != nil || st.Status == "" {
		t.Fatalf("query-status: %v %+v", err, st)
	}
	t.Logf("query-status: %+v", st)
	var qe *Error
	if err := m.Execute(ctx, "no-such-command", nil, nil); !errors.As(err, &qe) || qe.Class != "CommandNotFound" {
		t.Errorf("unknown command: %v", err)
	}
	// QEMU 7.2 answers query-sev with {"enabled": false, ...} or an error,
	// depending on the machine; either way it must not say SEV is on.
	var sev struct {
		Enabled bool `json:"enabled"`
	}
	raw, err := m.Run([]byte(`{"execute":"query-sev"}`))
	if err == nil {
		err = json.Unmarshal(raw, &sev)
	}
	t.Logf("query-sev: %s %v", raw, err)
	if sev.Enabled {
		t.Error("query-sev says SEV is enabled on a machine without SEV")
	}

	events, err := m.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// QEMU emits SHUTDOWN before its reply to quit, then closes the socket.
	if _, err := m.Run([]byte(`{"execute":"quit"}`)); err != nil && !errors.Is(err, ErrClosed) {
		t.Fatalf("quit: %v", err)
	}
	var shutdown bool
	for ev := range events {
		t.Logf("event %s %v", ev.Event, ev.Data)
		if ev.Event == "SHUTDOWN" {
			shutdown = true
		}
	}
	if !shutdown {
		t.Error("no SHUTDOWN event after quit")
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("qemu exit: %v", err)
		}
		exited <- err
	case <-time.After(10 * time.Second):
		t.Error("qemu did not exit after quit")
	}
	if !errors.Is(m.Err(), ErrClosed) {
		t.Errorf("Err after quit: %v", m.Err())
	}
}

// TestRealQEMUMachine runs a q35 TCG machine without disk, paused (-S):
// cont, stop, system_powerdown (POWERDOWN, which real QEMU sends before the
// reply), then quit.
func TestRealQEMUMachine(t *testing.T) {
	bin, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		if os.Getenv("QMP_REQUIRE_QEMU") != "" {
			t.Fatal("qemu-system-x86_64 not found and QMP_REQUIRE_QEMU is set")
		}
		t.Skip("qemu-system-x86_64 not found: install Debian's qemu-system-x86 (make agent-deps) to run the real-QEMU QMP test")
	}
	sock := filepath.Join(t.TempDir(), "qmp.sock")
	cmd := exec.Command(bin, "-machine", "q35", "-accel", "tcg", "-m", "128", "-S",
		"-nodefaults", "-display", "none", "-qmp", "unix:"+sock+",server=on,wait=off")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	m, _ := NewSocketMonitor("unix", sock, 10*time.Second)
	start := time.Now()
	for {
		if err = m.Connect(); err == nil {
			break
		}
		if time.Since(start) > 20*time.Second {
			t.Fatalf("connect: %v; qemu stderr: %s", err, stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	defer m.Disconnect()
	ctx := context.Background()
	status := func() string {
		var st struct {
			Status string `json:"status"`
		}
		if err := m.Execute(ctx, "query-status", nil, &st); err != nil {
			t.Fatal(err)
		}
		return st.Status
	}
	if s := status(); s != "prelaunch" {
		t.Errorf("status with -S: %q, want prelaunch", s)
	}
	events, _ := m.Events(ctx)
	next := func(name string) Event {
		t.Helper()
		timeout := time.After(10 * time.Second)
		for {
			select {
			case ev, ok := <-events:
				if !ok {
					t.Fatalf("events closed while waiting for %s", name)
				}
				if ev.Event == name {
					return ev
				}
			case <-timeout:
				t.Fatalf("no %s event", name)
			}
		}
	}
	if err := m.Execute(ctx, "cont", nil, nil); err != nil {
		t.Fatal(err)
	}
	next("RESUME")
	if s := status(); s != "running" {
		t.Errorf("status after cont: %q", s)
	}
	if err := m.Execute(ctx, "stop", nil, nil); err != nil {
		t.Fatal(err)
	}
	next("STOP")
	if err := m.Execute(ctx, "cont", nil, nil); err != nil {
		t.Fatal(err)
	}
	next("RESUME")
	if err := m.Execute(ctx, "system_powerdown", nil, nil); err != nil {
		t.Fatal(err)
	}
	// The reader delivers an event before it delivers a reply that came
	// after it, so a POWERDOWN already queued here came before the reply.
	before := len(events) > 0
	next("POWERDOWN")
	t.Logf("POWERDOWN arrived before system_powerdown's reply: %v", before)
	if _, err := m.Run([]byte(`{"execute":"quit"}`)); err != nil && !errors.Is(err, ErrClosed) {
		t.Fatalf("quit: %v", err)
	}
	next("SHUTDOWN")
	select {
	case <-m.Done():
	case <-time.After(10 * time.Second):
		t.Error("connection still open after quit")
	}
}
