package cvm

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestKitSerial: a new kit's serial is the build time in milliseconds; a
// rebuild that changes nothing in launch.json keeps the serial (the same
// inputs give the same bytes); a changed launch.json gets a serial above
// the previous one even if the clock says otherwise; a given one wins.
func TestKitSerial(t *testing.T) {
	prev := filepath.Join(t.TempDir(), ManifestFile)
	m := &Manifest{Version: ManifestVersion, ID: "0a1b2c3d", Participant: "site-1", MemoryMiB: 512}
	before := time.Now().UnixMilli()
	s1 := kitSerial(0, prev, m)
	if s1 < before || s1 > time.Now().UnixMilli() {
		t.Fatalf("first serial %d is not the time in ms (%d)", s1, before)
	}
	write := func(m *Manifest) {
		b, _ := json.MarshalIndent(m, "", "  ")
		os.WriteFile(prev, append(b, '\n'), 0o644)
	}
	m.Serial = s1
	write(m)
	same := *m
	same.Serial = 0
	if got := kitSerial(0, prev, &same); got != s1 {
		t.Errorf("unchanged rebuild: serial %d, want %d", got, s1)
	}
	changed := same
	changed.MemoryMiB = 1024
	if got := kitSerial(0, prev, &changed); got <= s1 {
		t.Errorf("changed kit: serial %d, not above %d", got, s1)
	}
	future := *m
	future.Serial = time.Now().Add(time.Hour).UnixMilli()
	write(&future)
	if got := kitSerial(0, prev, &changed); got != future.Serial+1 {
		t.Errorf("previous serial ahead of the clock: got %d, want %d", got, future.Serial+1)
	}
	if got := kitSerial(42, prev, &changed); got != 42 {
		t.Errorf("given serial: %d", got)
	}
}
