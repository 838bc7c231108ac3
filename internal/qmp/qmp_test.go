package qmp

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeQEMU serves one QMP connection on a unix socket; handle gets each
// command and writes whatever QEMU would.
func fakeQEMU(t *testing.T, handle func(cmd map[string]any, w *json.Encoder)) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "qmp.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		conn, err := l.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		w := json.NewEncoder(conn)
		w.Encode(map[string]any{"QMP": map[string]any{"version": map[string]any{"qemu": map[string]int{"major": 9, "minor": 1, "micro": 2}}, "capabilities": []string{}}})
		sc := bufio.NewScanner(conn)
		for sc.Scan() {
			var cmd map[string]any
			if json.Unmarshal(sc.Bytes(), &cmd) != nil {
				continue
			}
			if cmd["execute"] == "qmp_capabilities" {
				w.Encode(map[string]any{"return": map[string]any{}, "id": cmd["id"]})
				continue
			}
			handle(cmd, w)
		}
	}()
	return sock
}

func connect(t *testing.T, sock string) *SocketMonitor {
	t.Helper()
	m, err := NewSocketMonitor("unix", sock, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Connect(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Disconnect() })
	return m
}

func TestEventBeforeReply(t *testing.T) {
	sock := fakeQEMU(t, func(cmd map[string]any, w *json.Encoder) {
		switch cmd["execute"] {
		case "system_powerdown":
			w.Encode(map[string]any{"event": "POWERDOWN", "timestamp": map[string]int{"seconds": 1}})
			w.Encode(map[string]any{"return": map[string]any{}, "id": cmd["id"]})
		case "query-status":
			w.Encode(map[string]any{"return": map[string]any{"status": "running", "running": true}, "id": cmd["id"]})
		default:
			w.Encode(map[string]any{"error": map[string]any{"class": "CommandNotFound", "desc": "The command nope has not been found"}, "id": cmd["id"]})
		}
	})
	m := connect(t, sock)
	if maj, min, _ := m.Version(); maj != 9 || min != 1 {
		t.Errorf("version %d.%d", maj, min)
	}
	events, err := m.Events(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Run([]byte(`{"execute":"system_powerdown"}`)); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-events:
		if ev.Event != "POWERDOWN" {
			t.Errorf("event %q", ev.Event)
		}
	case <-time.After(time.Second):
		t.Fatal("the event that came before the reply was lost")
	}
	var st struct{ Status string }
	if err := m.Execute(context.Background(), "query-status", nil, &st); err != nil || st.Status != "running" {
		t.Errorf("query-status: %v %+v", err, st)
	}
	_, err = m.Run([]byte(`{"execute":"nope"}`))
	var qe *Error
	if !errors.As(err, &qe) || qe.Class != "CommandNotFound" {
		t.Errorf("error reply: %v", err)
	}
}

func TestOutOfOrderReplies(t *testing.T) {
	var mu sync.Mutex
	var held []map[string]any
	sock := fakeQEMU(t, func(cmd map[string]any, w *json.Encoder) {
		mu.Lock()
		defer mu.Unlock()
		held = append(held, cmd)
		if len(held) == 2 { // answer the second first
			for i := len(held) - 1; i >= 0; i-- {
				w.Encode(map[string]any{"return": held[i]["arguments"], "id": held[i]["id"]})
			}
		}
	})
	m := connect(t, sock)
	var wg sync.WaitGroup
	for _, n := range []string{"a", "b"} {
		wg.Add(1)
		go func(n string) {
			defer wg.Done()
			var out map[string]string
			if err := m.Execute(context.Background(), "echo", map[string]string{"n": n}, &out); err != nil || out["n"] != n {
				t.Errorf("%s got %v %v", n, out, err)
			}
		}(n)
	}
	wg.Wait()
}

func TestServerDiesMidCommand(t *testing.T) {
	sock := fakeQEMU(t, func(map[string]any, *json.Encoder) {}) // never answers
	m := connect(t, sock)
	done := make(chan error, 1)
	go func() { _, err := m.Run([]byte(`{"execute":"hang"}`)); done <- err }()
	time.Sleep(100 * time.Millisecond)
	m.conn.Close() // the peer going away looks the same from here
	select {
	case err := <-done:
		if !errors.Is(err, ErrClosed) {
			t.Errorf("pending command got %v, want ErrClosed", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("pending command not failed after the connection died")
	}
	if _, err := m.Run([]byte(`{"execute":"query-status"}`)); !errors.Is(err, ErrClosed) {
		t.Errorf("command after close: %v", err)
	}
}

// TestRealQEMU drives a real QEMU without a guest: query-version,
// query-status, then quit and the SHUTDOWN event.
func TestRealQEMU(t *testing.T) {
	bin, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		if os.Getenv("QMP_REQUIRE_QEMU") != "" {
			t.Fatal("qemu-system-x86_64 not found")
		}
		t.Skip("qemu-system-x86_64 not found: apt-get install qemu-system-x86 (make agent-deps)")
	}
	sock := filepath.Join(t.TempDir(), "qmp.sock")
	cmd := exec.Command(bin, "-machine", "none", "-nodefaults", "-display", "none", "-qmp", "unix:"+sock+",server=on,wait=off")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	var m *SocketMonitor
	for i := 0; i < 100; i++ {
		m, _ = NewSocketMonitor("unix", sock, 5*time.Second)
		if err = m.Connect(); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer m.Disconnect()
	var v struct {
		QEMU struct{ Major int } `json:"qemu"`
	}
	if err := m.Execute(context.Background(), "query-version", nil, &v); err != nil || v.QEMU.Major < 2 {
		t.Fatalf("query-version: %v %+v", err, v)
	}
	var st struct{ Status string }
	if err := m.Execute(context.Background(), "query-status", nil, &st); err != nil || st.Status == "" {
		t.Fatalf("query-status: %v %+v", err, st)
	}
	events, _ := m.Events(context.Background())
	if _, err := m.Run([]byte(`{"execute":"quit"}`)); err != nil && !errors.Is(err, ErrClosed) {
		t.Fatal(err)
	}
	for ev := range events {
		if strings.EqualFold(ev.Event, "SHUTDOWN") {
			return
		}
	}
	t.Error("no SHUTDOWN event after quit")
}
