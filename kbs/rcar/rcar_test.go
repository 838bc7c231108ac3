package rcar_test

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/flarekit/terraform-provider-flare/internal/attest/simulated"
	"github.com/flarekit/terraform-provider-flare/kbs/rcar"
)

// The vector of Trustee's attestation-service tests (lib.rs): JCS of
// {"a":"test","b":1,"c":{"d":"e"}}, SHA-384 as sha384sum prints it.
func TestCanonicalVector(t *testing.T) {
	in := map[string]any{"c": map[string]any{"d": "e"}, "b": 1, "a": "test"}
	c, err := rcar.Canonical(in)
	if err != nil {
		t.Fatal(err)
	}
	if string(c) != `{"a":"test","b":1,"c":{"d":"e"}}` {
		t.Fatalf("canonical %s", c)
	}
	sum := sha512.Sum384(c)
	const want = "e71ce8e70d814ba6639c3612ebee0ff1f76f650f8dbb5e47157e0f3f525cd22c4597480a186427c813ca941da78870c3"
	if hex.EncodeToString(sum[:]) != want {
		t.Fatalf("sha384 %x, want %s", sum, want)
	}
}

func TestCanonicalRFC8785(t *testing.T) {
	for in, want := range map[string]string{
		`{"b":[1.5,1e21,1e-7,0.000001,-0,100,"<&>"],"a":"\u00e9\n\u0001"}`: `{"a":"é\n\u0001","b":[1.5,1e+21,1e-7,0.000001,0,100,"<&>"]}`,
		// UTF-16 order: U+20AC (0x20AC) sorts before U+1F600 (0xD83D…) and after "\r".
		`{"😀":1,"€":2,"\r":3}`:                               `{"\r":3,"€":2,"😀":1}`,
		`[123456789012345680000, 4.5e-5, 333333333.3333333]`: `[123456789012345680000,0.000045,333333333.3333333]`,
	} {
		var v any
		if err := json.Unmarshal([]byte(in), &v); err != nil {
			t.Fatal(err)
		}
		got, err := rcar.Canonical(v)
		if err != nil || string(got) != want {
			t.Errorf("Canonical(%s) = %s %v, want %s", in, got, err, want)
		}
	}
}

func TestReportDataBinding(t *testing.T) {
	k := rcar.TeePubKey{Kty: "RSA", Alg: rcar.AlgRSAOAEP256, N: "AQAB", E: "AQAB"}
	rd, err := rcar.ReportData("bm9uY2U=", k, "")
	if err != nil {
		t.Fatal(err)
	}
	c := `{"additional-evidence":"","nonce":"bm9uY2U=","tee-pubkey":{"alg":"RSA-OAEP-256","e":"AQAB","kty":"RSA","n":"AQAB"}}`
	want := sha512.Sum384([]byte(c))
	if !bytes.Equal(rd[:48], want[:]) || !bytes.Equal(rd[48:], make([]byte, 16)) {
		t.Fatalf("REPORT_DATA %x, want %x ‖ 0¹⁶", rd, want)
	}
	other, _ := rcar.ReportData("bm9uY2V=", k, "")
	if other == rd {
		t.Fatal("nonce not bound")
	}
}

func TestJWERoundTrip(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 3072)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	secret := []byte("the root key passphrase 0123456789abcdef")
	resp, err := rcar.Seal(&key.PublicKey, secret)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(resp)
	var m map[string]any
	json.Unmarshal(b, &m)
	for _, f := range []string{"protected", "encrypted_key", "iv", "ciphertext", "tag"} {
		if s, ok := m[f].(string); !ok || s == "" || strings.ContainsAny(s, "+/=") {
			t.Errorf("member %s = %v: want base64url without padding", f, m[f])
		}
	}
	if _, ok := m["aad"]; ok {
		t.Error("aad member written")
	}
	var back rcar.Response
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	got, err := rcar.Open(key, &back)
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("Open: %q %v", got, err)
	}
	if _, err := rcar.Open(other, &back); !errors.Is(err, rcar.ErrJWE) {
		t.Fatalf("another key decrypted it: %v", err)
	}
	tampered := back
	tampered.Ciphertext = "A" + back.Ciphertext[1:]
	if tampered.Ciphertext == back.Ciphertext {
		tampered.Ciphertext = "B" + back.Ciphertext[1:]
	}
	if _, err := rcar.Open(key, &tampered); !errors.Is(err, rcar.ErrJWE) {
		t.Fatalf("tampered ciphertext opened: %v", err)
	}
	hdr := back
	hdr.Protected = "eyJhbGciOiJSU0ExXzUiLCJlbmMiOiJBMjU2R0NNIn0" // {"alg":"RSA1_5","enc":"A256GCM"}
	if _, err := rcar.Open(key, &hdr); err == nil {
		t.Fatal("RSA1_5 header accepted")
	}
	// The JWK of the key round-trips.
	pub, err := rcar.RSAPubKey(&key.PublicKey).RSA()
	if err != nil || !pub.Equal(&key.PublicKey) {
		t.Fatalf("JWK round trip: %v", err)
	}
	if _, err := (rcar.TeePubKey{Kty: "EC", Crv: "P-256", Alg: "ECDH-ES+A256KW"}).RSA(); err == nil {
		t.Fatal("EC key taken as RSA")
	}
}

func TestSNPEvidenceRoundTrip(t *testing.T) {
	for _, product := range []string{"Milan-B1", "Genoa-B1"} {
		t.Run(product, func(t *testing.T) {
			dev, err := simulated.New(simulated.Options{
				Measurement: bytes.Repeat([]byte{0xab}, 48), HostData: bytes.Repeat([]byte{0xcd}, 32),
				TCB: 0x1500000000000004, ProductName: product, GuestSVN: 7,
			})
			if err != nil {
				t.Fatal(err)
			}
			var rd [64]byte
			copy(rd[:], "report data")
			quote, err := dev.QuoteProvider().GetRawQuote(rd)
			if err != nil {
				t.Fatal(err)
			}
			ev, err := rcar.SNPEvidenceFromQuote(quote)
			if err != nil {
				t.Fatal(err)
			}
			js, err := json.Marshal(ev)
			if err != nil {
				t.Fatal(err)
			}
			// serde shape: arrays of numbers, numbers, TCB objects, cert names.
			var m map[string]any
			if err := json.Unmarshal(js, &m); err != nil {
				t.Fatal(err)
			}
			rep := m["attestation_report"].(map[string]any)
			if meas, ok := rep["measurement"].([]any); !ok || len(meas) != 48 || meas[0].(float64) != 0xab {
				t.Fatalf("measurement is not an array of 48 numbers: %v", rep["measurement"])
			}
			if _, ok := rep["policy"].(float64); !ok {
				t.Fatalf("policy %v", rep["policy"])
			}
			tcb := rep["reported_tcb"].(map[string]any)
			if tcb["bootloader"].(float64) != 4 || tcb["microcode"].(float64) != 0x15 || tcb["fmc"] != nil {
				t.Fatalf("reported_tcb %v", tcb)
			}
			if sig := rep["signature"].(map[string]any); len(sig["r"].([]any)) != 72 {
				t.Fatalf("signature %v", sig)
			}
			if rep["current_mit_vector"] != nil || rep["cpuid_fam_id"].(float64) != 0x19 {
				t.Fatalf("optional fields: %v %v", rep["current_mit_vector"], rep["cpuid_fam_id"])
			}
			var names []string
			for _, c := range m["cert_chain"].([]any) {
				names = append(names, c.(map[string]any)["cert_type"].(string))
			}
			if j := "," + strings.Join(names, ",") + ","; !strings.Contains(j, ",VCEK,") || !strings.Contains(j, ",ASK,") || !strings.Contains(j, ",ARK,") {
				t.Fatalf("cert_chain types %v", names)
			}
			// Field order is virtee/sev's.
			if i, j := strings.Index(string(js), `"version"`), strings.Index(string(js), `"signature"`); i < 0 || j < i {
				t.Fatal("field order")
			}

			var back rcar.SNPEvidence
			if err := json.Unmarshal(js, &back); err != nil {
				t.Fatal(err)
			}
			raw, table, err := back.Raw()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(raw, quote[:rcar.ReportSize]) {
				t.Fatalf("report differs after raw → JSON → raw")
			}
			again, err := rcar.ParseCertTable(table)
			if err != nil || len(again) != len(ev.CertChain) {
				t.Fatalf("cert table: %d entries %v", len(again), err)
			}
			for i := range again {
				if again[i].CertType != ev.CertChain[i].CertType || !bytes.Equal(again[i].Data, ev.CertChain[i].Data) {
					t.Fatalf("cert %d differs", i)
				}
			}
		})
	}

	// A report with a non-zero reserved byte cannot be expressed.
	dev, _ := simulated.New(simulated.Options{})
	quote, _ := dev.QuoteProvider().GetRawQuote([64]byte{})
	bad := append([]byte(nil), quote[:rcar.ReportSize]...)
	bad[0x4C] = 1
	if _, err := rcar.ParseSNPReport(bad); err == nil || !strings.Contains(err.Error(), "reserved") {
		t.Fatalf("reserved byte: %v", err)
	}
	if _, err := rcar.ParseSNPReport(bad[:100]); err == nil {
		t.Fatal("short report parsed")
	}
	for _, js := range []string{`{"cert_type":"NOPE","data":[]}`, `{"cert_type":{"OTHER":"x"},"data":[]}`, `{"cert_type":"VCEK","data":[256]}`, `{"cert_type":"VCEK","data":"AAAA"}`} {
		var e rcar.CertTableEntry
		if err := json.Unmarshal([]byte(js), &e); err == nil {
			t.Errorf("%s parsed", js)
		}
	}
	var e rcar.CertTableEntry
	if err := json.Unmarshal([]byte(`{"cert_type":{"OTHER":"00112233-4455-6677-8899-aabbccddeeff"},"data":[1,2]}`), &e); err != nil {
		t.Fatal(err)
	}
	if b, _ := json.Marshal(e); string(b) != `{"cert_type":{"OTHER":"00112233-4455-6677-8899-aabbccddeeff"},"data":[1,2]}` {
		t.Fatalf("OTHER round trip: %s", b)
	}
}
