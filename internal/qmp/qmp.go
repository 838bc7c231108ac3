// Package qmp is a small client for the QEMU Machine Protocol, shaped like
// go-qemu's qmp.Monitor (Connect, Disconnect, Run, Events), which the Go
// module proxy here does not serve.
//
// One reader goroutine decodes everything QEMU sends. Replies are matched
// to commands by "id"; events go to subscribers. QEMU may send an event
// before the reply of the command that caused it (system_powerdown emits
// POWERDOWN first), so the two are never assumed to be ordered.
package qmp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"
)

// Monitor is what callers need from a QMP connection.
type Monitor interface {
	Connect() error
	Disconnect() error
	Run(command []byte) ([]byte, error)
	Events(ctx context.Context) (<-chan Event, error)
}

// Event is an asynchronous QMP event.
type Event struct {
	Event     string         `json:"event"`
	Data      map[string]any `json:"data"`
	Timestamp struct {
		Seconds      int64 `json:"seconds"`
		Microseconds int64 `json:"microseconds"`
	} `json:"timestamp"`
}

// Error is a QMP error reply; Class is QEMU's error class (GenericError,
// CommandNotFound, DeviceNotActive, ...).
type Error struct {
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

func (e *Error) Error() string { return "qmp: " + e.Class + ": " + e.Desc }

// ErrClosed is returned for commands on a monitor whose connection ended.
var ErrClosed = errors.New("qmp: connection closed")

// eventBuffer bounds how many undelivered events a subscriber may hold;
// older ones are dropped (and counted) so a slow reader cannot stall QEMU.
const eventBuffer = 128

// SocketMonitor talks QMP over a unix or TCP socket.
type SocketMonitor struct {
	network, addr string
	timeout       time.Duration

	conn    net.Conn
	version [3]int

	writeMu sync.Mutex
	mu      sync.Mutex
	nextID  uint64
	pending map[string]chan reply
	subs    map[chan Event]struct{}
	dropped uint64
	closed  bool
	done    chan struct{}
	readErr error
}

type reply struct {
	raw json.RawMessage
	err error
}

// NewSocketMonitor prepares a monitor for addr; timeout bounds dialing and
// each command.
func NewSocketMonitor(network, addr string, timeout time.Duration) (*SocketMonitor, error) {
	if network != "unix" && network != "tcp" {
		return nil, fmt.Errorf("qmp: network %q: use unix or tcp", network)
	}
	return &SocketMonitor{network: network, addr: addr, timeout: timeout,
		pending: map[string]chan reply{}, subs: map[chan Event]struct{}{}, done: make(chan struct{})}, nil
}

// Connect dials, reads the greeting and negotiates capabilities.
func (m *SocketMonitor) Connect() error {
	conn, err := net.DialTimeout(m.network, m.addr, m.timeout)
	if err != nil {
		return fmt.Errorf("qmp: dial %s: %w", m.addr, err)
	}
	dec := json.NewDecoder(conn)
	_ = conn.SetReadDeadline(time.Now().Add(m.timeout))
	var greeting struct {
		QMP *struct {
			Version struct {
				QEMU struct{ Major, Minor, Micro int } `json:"qemu"`
			} `json:"version"`
		} `json:"QMP"`
	}
	if err := dec.Decode(&greeting); err != nil || greeting.QMP == nil {
		conn.Close()
		return fmt.Errorf("qmp: %s sent no QMP greeting: %v", m.addr, err)
	}
	_ = conn.SetReadDeadline(time.Time{})
	v := greeting.QMP.Version.QEMU
	m.conn, m.version = conn, [3]int{v.Major, v.Minor, v.Micro}
	go m.read(dec)
	if _, err := m.Run([]byte(`{"execute":"qmp_capabilities"}`)); err != nil {
		m.Disconnect()
		return fmt.Errorf("qmp: capabilities negotiation: %w", err)
	}
	return nil
}

// Version is QEMU's version from the greeting.
func (m *SocketMonitor) Version() (major, minor, micro int) {
	return m.version[0], m.version[1], m.version[2]
}

// Dropped is how many events were dropped because a subscriber lagged.
func (m *SocketMonitor) Dropped() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.dropped
}

// Disconnect closes the connection; pending commands fail with ErrClosed
// and event channels close.
func (m *SocketMonitor) Disconnect() error {
	if m.conn == nil {
		return nil
	}
	err := m.conn.Close()
	<-m.done
	return err
}

func (m *SocketMonitor) read(dec *json.Decoder) {
	var err error
	for {
		var msg struct {
			ID     json.RawMessage `json:"id"`
			Return json.RawMessage `json:"return"`
			Error  *Error          `json:"error"`
			Event  string          `json:"event"`
		}
		var raw json.RawMessage
		if err = dec.Decode(&raw); err != nil {
			break
		}
		if err = json.Unmarshal(raw, &msg); err != nil {
			break
		}
		if msg.Event != "" {
			var ev Event
			if json.Unmarshal(raw, &ev) == nil {
				m.publish(ev)
			}
			continue
		}
		var id string
		if err := json.Unmarshal(msg.ID, &id); err != nil {
			continue // a reply we did not ask for
		}
		m.mu.Lock()
		ch := m.pending[id]
		delete(m.pending, id)
		m.mu.Unlock()
		if ch == nil {
			continue
		}
		if msg.Error != nil {
			ch <- reply{err: msg.Error}
		} else {
			ch <- reply{raw: msg.Return}
		}
	}
	m.mu.Lock()
	m.closed, m.readErr = true, err
	for id, ch := range m.pending {
		ch <- reply{err: fmt.Errorf("%w: %v", ErrClosed, err)}
		delete(m.pending, id)
	}
	for ch := range m.subs {
		close(ch)
		delete(m.subs, ch)
	}
	m.mu.Unlock()
	close(m.done)
}

func (m *SocketMonitor) publish(ev Event) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for ch := range m.subs {
		select {
		case ch <- ev:
		default:
			// Drop the oldest so the newest (often SHUTDOWN) gets through.
			select {
			case <-ch:
			default:
			}
			m.dropped++
			ch <- ev
		}
	}
}

// Run sends one command (a JSON object with "execute") and returns the raw
// "return" value. It sets the command's "id" to match the reply.
func (m *SocketMonitor) Run(command []byte) ([]byte, error) {
	var cmd map[string]any
	if err := json.Unmarshal(command, &cmd); err != nil {
		return nil, fmt.Errorf("qmp: command is not a JSON object: %w", err)
	}
	m.mu.Lock()
	if m.closed || m.conn == nil {
		m.mu.Unlock()
		return nil, ErrClosed
	}
	m.nextID++
	id := strconv.FormatUint(m.nextID, 10)
	ch := make(chan reply, 1)
	m.pending[id] = ch
	m.mu.Unlock()
	cmd["id"] = id
	b, _ := json.Marshal(cmd)
	m.writeMu.Lock()
	_ = m.conn.SetWriteDeadline(time.Now().Add(m.timeout))
	_, err := m.conn.Write(append(b, '\n'))
	m.writeMu.Unlock()
	if err != nil {
		m.forget(id)
		return nil, fmt.Errorf("qmp: send %v: %w", cmd["execute"], err)
	}
	select {
	case r := <-ch:
		return r.raw, r.err
	case <-time.After(m.timeout):
		m.forget(id)
		return nil, fmt.Errorf("qmp: %v: no reply within %s", cmd["execute"], m.timeout)
	}
}

func (m *SocketMonitor) forget(id string) {
	m.mu.Lock()
	delete(m.pending, id)
	m.mu.Unlock()
}

// Execute runs cmd with args and decodes the reply into out (may be nil).
func (m *SocketMonitor) Execute(ctx context.Context, cmd string, args any, out any) error {
	c := map[string]any{"execute": cmd}
	if args != nil {
		c["arguments"] = args
	}
	b, _ := json.Marshal(c)
	type result struct {
		raw []byte
		err error
	}
	res := make(chan result, 1)
	go func() {
		raw, err := m.Run(b)
		res <- result{raw, err}
	}()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case r := <-res:
		if r.err != nil || out == nil {
			return r.err
		}
		return json.Unmarshal(r.raw, out)
	}
}

// Events subscribes to QMP events until ctx ends or the connection closes.
func (m *SocketMonitor) Events(ctx context.Context) (<-chan Event, error) {
	ch := make(chan Event, eventBuffer)
	m.mu.Lock()
	if m.closed || m.conn == nil {
		m.mu.Unlock()
		return nil, ErrClosed
	}
	m.subs[ch] = struct{}{}
	m.mu.Unlock()
	go func() {
		select {
		case <-ctx.Done():
		case <-m.done:
			return
		}
		m.mu.Lock()
		if _, ok := m.subs[ch]; ok {
			delete(m.subs, ch)
			close(ch)
		}
		m.mu.Unlock()
	}()
	return ch, nil
}
