package kbs_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/flarekit/terraform-provider-flare/kbs"
	"github.com/flarekit/terraform-provider-flare/kbs/rcar"
)

// BenchmarkAttestVerify is the broker's verify latency: one /auth and one
// /attest (serde evidence → raw report, REPORT_DATA binding, signature and
// fake-chain verification, validation, token), in-process without TLS.
func BenchmarkAttestVerify(b *testing.B) {
	st, _ := kbs.NewDirStore(b.TempDir())
	srv, err := kbs.New(kbs.Options{Store: st, Simulated: true, Logger: discardLogger()})
	if err != nil {
		b.Fatal(err)
	}
	h := srv.Handler()
	dev := device(b, measA, 0)
	jwk := rcar.RSAPubKey(&testKey().PublicKey)
	authBody, _ := json.Marshal(rcar.Request{Version: "0.4.0", Tee: "snp", ExtraParams: json.RawMessage(`{}`)})
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/kbs/v0/auth", bytes.NewReader(authBody)))
		var ch rcar.Challenge
		json.Unmarshal(w.Body.Bytes(), &ch)
		cookie := w.Result().Cookies()[0]
		rd, _ := rcar.ReportData(ch.Nonce, jwk, "")
		q, _ := dev.QuoteProvider().GetRawQuote(rd)
		ev, _ := rcar.SNPEvidenceFromQuote(q)
		evJSON, _ := json.Marshal(ev)
		body, _ := json.Marshal(rcar.Attestation{RuntimeData: rcar.RuntimeData{Nonce: ch.Nonce, TeePubKey: jwk}, TeeEvidence: rcar.CompositeEvidence{PrimaryEvidence: evJSON}})
		req := httptest.NewRequest(http.MethodPost, "/kbs/v0/attest", bytes.NewReader(body))
		req.AddCookie(cookie)
		w = httptest.NewRecorder()
		b.StartTimer()
		h.ServeHTTP(w, req)
		if w.Code != 200 {
			b.Fatalf("attest: %d %s", w.Code, w.Body)
		}
	}
}
