// Package qmp is a small client for the QEMU Machine Protocol, shaped like
// go-qemu's qmp.Monitor (Connect, Disconnect, Run, Events), which the Go
// module proxy here does not serve.
//
// One reader goroutine decodes everything QEMU sends with a json.Decoder.
// Replies are matched to commands by "id" (QMP echoes a command's id in its
// reply), so concurrent Run calls may be answered in any order. Events go
// to subscribers. QEMU may send an event before the reply of the command
// that caused it (system_powerdown emits POWERDOWN first; quit emits
// SHUTDOWN first), so the two are never assumed to be ordered and an event
// is never mistaken for a reply.
//
// Each subscriber has a bounded buffer: when it is full the oldest event is
// dropped (and counted, see Dropped) so a slow reader cannot stall QEMU or
// the replies behind the events.
package qmp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"
)

// Monitor is what callers need from a QMP connection; the same shape as
// go-qemu's qmp.Monitor.
type Monitor interface {
	Connect() error
	Disconnect() error
	Run(command []byte) ([]byte, error)
	Events(ctx context.Context) (<-chan Event, error)
}

var _ Monitor = (*SocketMonitor)(nil)

// Command is a QMP command as go-qemu spells it; json.Marshal it for Run.
type Command struct {
	Execute string `json:"execute"`
	Args    any    `json:"arguments,omitempty"`
	ID      any    `json:"id,omitempty"`
}

// Event is an asynchronous QMP event, e.g.
// {"event": "SHUTDOWN", "data": {"guest": false, "reason": "host-qmp-quit"},
// "timestamp": {"seconds": 1700000000, "microseconds": 12345}}.
type Event struct {
	Event     string         `json:"event"`
	Data      map[string]any `json:"data,omitempty"`
	Timestamp struct {
		Seconds      int64 `json:"seconds"`
		Microseconds int64 `json:"microseconds"`
	} `json:"timestamp"`
}

// Time is the event's timestamp (QEMU's host clock when it emitted it).
func (e Event) Time() time.Time {
	return time.Unix(e.Timestamp.Seconds, e.Timestamp.Microseconds*1000)
}

// Error is a QMP error reply. Class is QEMU's error class (GenericError,
// CommandNotFound, DeviceNotActive, DeviceNotFound, KVMMissingCap), Desc
// its human-readable description. Use errors.As to get it from Run.
type Error struct {
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

func (e *Error) Error() string { return "qmp: " + e.Class + ": " + e.Desc }

// ErrClosed is wrapped by every error caused by the connection having
// ended (QEMU exited, the socket broke, or Disconnect was called).
var ErrClosed = errors.New("QMP connection closed")

// DefaultEventBuffer is how many undelivered events a subscriber may hold
// before the oldest are dropped.
const DefaultEventBuffer = 128

// SocketMonitor talks QMP over a unix socket (or TCP on 127.0.0.1).
type SocketMonitor struct {
	network, addr string
	timeout       time.Duration

	// EventBuffer bounds each subscriber's queue; 0 means DefaultEventBuffer.
	// Set it before calling Events.
	EventBuffer int

	writeMu sync.Mutex // one command on the wire at a time

	mu        sync.Mutex
	conn      net.Conn
	connected bool
	closing   string // why we closed the socket ourselves, if we did
	version   [3]int
	pkg       string
	caps      []string
	nextID    uint64
	pending   map[string]*call
	subs      map[chan Event]struct{}
	dropped   uint64
	done      chan struct{} // closed when the reader goroutine ends
	err       error         // why the connection ended; wraps ErrClosed
}

type call struct {
	execute string
	ch      chan reply
}

type reply struct {
	raw json.RawMessage
	err error
}

// NewSocketMonitor prepares a monitor for addr. timeout bounds dialing, the
// greeting, each write, and each command's wait for its reply (0: no bound;
// RunContext and Execute can bound a command with their context instead).
func NewSocketMonitor(network, addr string, timeout time.Duration) (*SocketMonitor, error) {
	switch network {
	case "unix", "tcp", "tcp4", "tcp6":
	default:
		return nil, fmt.Errorf("qmp: network %q: use unix or tcp", network)
	}
	if addr == "" {
		return nil, errors.New("qmp: empty address")
	}
	done := make(chan struct{})
	close(done)
	return &SocketMonitor{network: network, addr: addr, timeout: timeout, done: done,
		err: fmt.Errorf("%w: %s: not connected", ErrClosed, addr)}, nil
}

// Addr is the socket the monitor talks to.
func (m *SocketMonitor) Addr() string { return m.addr }

func (m *SocketMonitor) deadline() time.Time {
	if m.timeout <= 0 {
		return time.Time{}
	}
	return time.Now().Add(m.timeout)
}

// greeting is QEMU's first message:
// {"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7},
// "package": "Debian 1:7.2+dfsg-7"}, "capabilities": ["oob"]}}
type greeting struct {
	QMP *struct {
		Version struct {
			QEMU struct {
				Major int `json:"major"`
				Minor int `json:"minor"`
				Micro int `json:"micro"`
			} `json:"qemu"`
			Package string `json:"package"`
		} `json:"version"`
		Capabilities []string `json:"capabilities"`
	} `json:"QMP"`
}

// Connect dials, reads the greeting and negotiates capabilities
// (qmp_capabilities). A monitor may Connect again after Disconnect or after
// the connection was lost.
func (m *SocketMonitor) Connect() error {
	m.mu.Lock()
	if m.connected {
		m.mu.Unlock()
		return fmt.Errorf("qmp: %s: already connected", m.addr)
	}
	m.mu.Unlock()

	d := net.Dialer{Timeout: m.timeout}
	conn, err := d.Dial(m.network, m.addr)
	if err != nil {
		return fmt.Errorf("qmp: dial %s: %w", m.addr, err)
	}
	_ = conn.SetReadDeadline(m.deadline())
	dec := json.NewDecoder(conn)
	var g greeting
	if err := dec.Decode(&g); err != nil {
		conn.Close()
		return fmt.Errorf("qmp: %s: reading the QMP greeting: %w", m.addr, err)
	}
	if g.QMP == nil {
		conn.Close()
		return fmt.Errorf("qmp: %s: first message is not a QMP greeting", m.addr)
	}
	_ = conn.SetReadDeadline(time.Time{})

	m.mu.Lock()
	v := g.QMP.Version
	m.conn, m.connected, m.closing = conn, true, ""
	m.version = [3]int{v.QEMU.Major, v.QEMU.Minor, v.QEMU.Micro}
	m.pkg, m.caps = v.Package, g.QMP.Capabilities
	m.pending = map[string]*call{}
	m.subs = map[chan Event]struct{}{}
	m.done, m.err = make(chan struct{}), nil
	done := m.done
	m.mu.Unlock()
	go m.read(conn, dec, done)

	if _, err := m.Run([]byte(`{"execute":"qmp_capabilities"}`)); err != nil {
		m.Disconnect()
		return fmt.Errorf("qmp: %s: capabilities negotiation: %w", m.addr, err)
	}
	return nil
}

// Version is QEMU's version from the greeting.
func (m *SocketMonitor) Version() (major, minor, micro int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.version[0], m.version[1], m.version[2]
}

// Package is the greeting's version.package (e.g. "Debian 1:7.2+dfsg-7").
func (m *SocketMonitor) Package() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.pkg
}

// Capabilities are the capabilities QEMU offered in the greeting (e.g.
// "oob"); none are enabled by Connect.
func (m *SocketMonitor) Capabilities() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.caps...)
}

// Dropped is how many events were dropped, over all subscribers, because a
// subscriber's buffer was full.
func (m *SocketMonitor) Dropped() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.dropped
}

// Done is closed when the current connection ends (QEMU exited or closed
// the socket, or Disconnect); Err then says why.
func (m *SocketMonitor) Done() <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.done
}

// Err is nil while connected, otherwise why the connection ended (wrapping
// ErrClosed).
func (m *SocketMonitor) Err() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.err
}

// Disconnect closes the socket and waits for the reader to end: pending
// commands fail with an error wrapping ErrClosed and event channels close.
// It is safe to call more than once.
func (m *SocketMonitor) Disconnect() error {
	m.mu.Lock()
	if !m.connected {
		m.mu.Unlock()
		return nil
	}
	conn, done := m.conn, m.done
	if m.closing == "" {
		m.closing = "Disconnect called"
	}
	m.mu.Unlock()
	err := conn.Close()
	<-done
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

// closeWith closes the socket because of a local failure (a failed or timed
// out write), so the reader ends and everything pending fails.
func (m *SocketMonitor) closeWith(conn net.Conn, why string) {
	m.mu.Lock()
	if m.conn == conn && m.closing == "" {
		m.closing = why
	}
	m.mu.Unlock()
	conn.Close()
}

// envelope is any message QEMU sends after the greeting.
type envelope struct {
	ID     json.RawMessage `json:"id"`
	Return json.RawMessage `json:"return"`
	Error  *Error          `json:"error"`
	Event  string          `json:"event"`
}

func (m *SocketMonitor) read(conn net.Conn, dec *json.Decoder, done chan struct{}) {
	var cause error
	for {
		var raw json.RawMessage
		if cause = dec.Decode(&raw); cause != nil {
			break
		}
		var msg envelope
		if err := json.Unmarshal(raw, &msg); err != nil {
			continue // valid JSON that is not an object: not QMP, ignore
		}
		if msg.Event != "" {
			var ev Event
			if json.Unmarshal(raw, &ev) == nil {
				m.publish(ev)
			}
			continue
		}
		if len(msg.ID) == 0 {
			// A reply without an id: QEMU answers input it could not
			// parse this way. Every command we send has an id.
			continue
		}
		key := idKey(msg.ID)
		m.mu.Lock()
		c := m.pending[key]
		delete(m.pending, key)
		m.mu.Unlock()
		if c == nil {
			continue // the caller gave up (timeout or context)
		}
		switch {
		case msg.Error != nil:
			c.ch <- reply{err: msg.Error}
		case msg.Return == nil:
			c.ch <- reply{err: fmt.Errorf("qmp: %s: reply has neither return nor error: %s", c.execute, raw)}
		default:
			c.ch <- reply{raw: msg.Return}
		}
	}

	m.mu.Lock()
	why := m.closing
	switch {
	case why != "":
	case errors.Is(cause, io.EOF):
		why = "QEMU closed the socket (EOF)"
	case errors.Is(cause, io.ErrUnexpectedEOF):
		why = "QEMU closed the socket in the middle of a message"
	default:
		why = cause.Error()
	}
	m.err = fmt.Errorf("%w: %s: %s", ErrClosed, m.addr, why)
	m.connected = false
	for id, c := range m.pending {
		c.ch <- reply{err: fmt.Errorf("qmp: %s: no reply before the connection ended: %w", c.execute, m.err)}
		delete(m.pending, id)
	}
	for ch := range m.subs {
		close(ch)
		delete(m.subs, ch)
	}
	m.mu.Unlock()
	conn.Close()
	close(done)
}

func (m *SocketMonitor) publish(ev Event) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for ch := range m.subs {
		for sent := false; !sent; {
			select {
			case ch <- ev:
				sent = true
			default:
				// Full: drop the oldest so the newest (often SHUTDOWN)
				// gets through.
				select {
				case <-ch:
					m.dropped++
				default:
				}
			}
		}
	}
}

// idKey canonicalises a JSON id so that the id we sent and the one QEMU
// echoes (re-serialised by QEMU) compare equal.
func idKey(raw json.RawMessage) string {
	var v any
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	if d.Decode(&v) != nil {
		return string(raw)
	}
	if n, ok := v.(json.Number); ok {
		return "n:" + n.String()
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// Run sends one command, a JSON object such as
// {"execute": "query-status"} or {"execute": "stop", "arguments": {...}},
// and returns the raw "return" value. If the command has an "id" it is
// used (it must not collide with a pending command's), otherwise one is
// assigned. A QMP error reply comes back as *Error; a lost connection as an
// error wrapping ErrClosed. The wait is bounded by the monitor's timeout.
func (m *SocketMonitor) Run(command []byte) ([]byte, error) {
	return m.RunContext(context.Background(), command)
}

// RunContext is Run bounded also by ctx; when ctx ends first the reply, if
// it ever comes, is discarded.
func (m *SocketMonitor) RunContext(ctx context.Context, command []byte) ([]byte, error) {
	var cmd map[string]json.RawMessage
	if err := json.Unmarshal(command, &cmd); err != nil || cmd == nil {
		return nil, fmt.Errorf("qmp: command is not a JSON object: %s", command)
	}
	var execute string
	if err := json.Unmarshal(cmd["execute"], &execute); err != nil || execute == "" {
		return nil, fmt.Errorf("qmp: command has no \"execute\": %s", command)
	}

	m.mu.Lock()
	if !m.connected {
		err := m.err
		m.mu.Unlock()
		return nil, fmt.Errorf("qmp: %s: %w", execute, err)
	}
	conn, done := m.conn, m.done
	var key string
	if id, ok := cmd["id"]; ok {
		key = idKey(id)
		if _, busy := m.pending[key]; busy {
			m.mu.Unlock()
			return nil, fmt.Errorf("qmp: %s: id %s is already in use by a pending command", execute, id)
		}
	} else {
		for {
			m.nextID++
			id, _ := json.Marshal("flare-" + strconv.FormatUint(m.nextID, 10))
			key = idKey(id)
			if _, busy := m.pending[key]; !busy {
				cmd["id"] = id
				break
			}
		}
	}
	c := &call{execute: execute, ch: make(chan reply, 1)}
	m.pending[key] = c
	m.mu.Unlock()

	b, _ := json.Marshal(cmd)
	m.writeMu.Lock()
	_ = conn.SetWriteDeadline(m.deadline())
	_, err := conn.Write(append(b, '\n'))
	m.writeMu.Unlock()
	if err != nil {
		m.forget(key)
		select {
		case <-done: // the connection had already ended: say why
			return nil, fmt.Errorf("qmp: %s: %w", execute, m.Err())
		default:
		}
		// A failed or partial write leaves the stream in an unknown state.
		m.closeWith(conn, "writing "+execute+" failed: "+err.Error())
		return nil, fmt.Errorf("qmp: %s: send: %w", execute, err)
	}

	var timeout <-chan time.Time
	if m.timeout > 0 {
		t := time.NewTimer(m.timeout)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case r := <-c.ch:
		return r.raw, r.err
	case <-ctx.Done():
		m.forget(key)
		return nil, fmt.Errorf("qmp: %s: %w", execute, ctx.Err())
	case <-timeout:
		m.forget(key)
		return nil, fmt.Errorf("qmp: %s: no reply within %s", execute, m.timeout)
	}
}

func (m *SocketMonitor) forget(key string) {
	m.mu.Lock()
	delete(m.pending, key)
	m.mu.Unlock()
}

// Execute runs cmd with args (nil for none; anything that marshals to a
// JSON object) and decodes the "return" value into out (nil to discard).
func (m *SocketMonitor) Execute(ctx context.Context, cmd string, args any, out any) error {
	c := map[string]any{"execute": cmd}
	if args != nil {
		c["arguments"] = args
	}
	b, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("qmp: %s: arguments: %w", cmd, err)
	}
	raw, err := m.RunContext(ctx, b)
	if err != nil || out == nil {
		return err
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("qmp: %s: decoding the reply %s: %w", cmd, raw, err)
	}
	return nil
}

// Events subscribes to QMP events from now on. The channel closes when ctx
// ends or the connection ends. Subscribe before running a command whose
// events you need: they may arrive before its reply.
func (m *SocketMonitor) Events(ctx context.Context) (<-chan Event, error) {
	n := m.EventBuffer
	if n <= 0 {
		n = DefaultEventBuffer
	}
	ch := make(chan Event, n)
	m.mu.Lock()
	if !m.connected {
		err := m.err
		m.mu.Unlock()
		return nil, fmt.Errorf("qmp: events: %w", err)
	}
	m.subs[ch] = struct{}{}
	done := m.done
	m.mu.Unlock()
	go func() {
		select {
		case <-ctx.Done():
		case <-done:
			return // the reader closed ch
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
