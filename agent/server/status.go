package server

import (
	"fmt"
	"html/template"
	"net/http"
	"time"

	"github.com/flarekit/terraform-provider-flare/agent/api"
)

var statusTmpl = template.Must(template.New("status").Funcs(template.FuncMap{
	"ago": func(t *time.Time) string {
		if t == nil {
			return ""
		}
		return time.Since(*t).Round(time.Second).String() + " ago"
	},
	"short": func(s string) string {
		if len(s) > 16 {
			return s[:16] + "…"
		}
		return s
	},
}).Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="10">
<title>flare-agent · {{.H.Site}}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.4em; margin-bottom: 0.2em; }
.meta { color: #555; margin-bottom: 1.5em; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 0.35em 0.7em; border-bottom: 1px solid #ddd; font-size: 0.92em; }
th { background: #f4f4f4; }
code { font-size: 0.9em; }
.state-running { color: #0a7a2f; font-weight: 600; }
.state-crashed, .state-failed { color: #b00020; font-weight: 600; }
.state-stopped { color: #666; }
.simulated { background: #fff3cd; color: #7a5200; padding: 0 0.4em; border-radius: 3px; font-weight: 600; }
.snp { background: #d9f2e3; color: #0a5a2a; padding: 0 0.4em; border-radius: 3px; font-weight: 600; }
.warn { background: #fff3cd; border: 1px solid #e0c36b; padding: 0.6em 1em; margin-bottom: 1em; }
</style>
</head>
<body>
<h1>flare-agent on {{.H.Site}}</h1>
<div class="meta">org <b>{{.H.Org}}</b> · mode <b>{{.H.Mode}}</b> (launches use <b>{{if .H.EffectiveMode}}{{.H.EffectiveMode}}{{else}}none{{end}}</b>) ·
QEMU {{.H.QEMUVersion}} · KVM {{if .H.KVM}}yes{{else}}no (TCG){{end}} · version {{.H.Version}} · {{.H.Time.Format "2006-01-02 15:04:05 UTC"}}</div>
{{if not .H.SNP.Available}}<div class="warn" id="snp-unavailable"><b>SEV-SNP is not available on this host</b>{{if eq .H.EffectiveMode "simulated"}}; CVMs run in <span class="simulated">simulated</span> mode: no memory encryption, reports signed by a fake AMD chain{{end}}:
<ul>{{range .H.SNP.Reasons}}<li>{{.}}</li>{{end}}</ul></div>{{end}}
<h2>CVMs ({{len .CVMs}})</h2>
{{if .CVMs}}
<table id="cvms">
<thead><tr><th>ID</th><th>Participant</th><th>Role</th><th>Mode</th><th>State</th><th>QEMU</th><th>PID</th><th>Guest</th><th>Last attestation</th><th>Restarts</th><th>Started</th><th>Measurement</th></tr></thead>
<tbody>
{{range .CVMs}}<tr class="cvm" data-id="{{.ID}}">
<td><code>{{.ID}}</code></td>
<td>{{.Participant}}</td>
<td>{{.Role}}</td>
<td>{{if eq .Mode "simulated"}}<span class="simulated">simulated</span>{{else}}<span class="snp">{{.Mode}}</span>{{end}} · {{.Accel}}</td>
<td class="state-{{.State}}">{{.State}}{{if .LastError}}<br><small>{{.LastError}}</small>{{end}}</td>
<td>{{.QEMUStatus}}</td>
<td>{{if .PID}}{{.PID}}{{end}}</td>
<td>{{if .GuestReady}}responder up{{else}}—{{end}}</td>
<td>{{with .LastVerdict}}{{if .Verified}}verified{{else}}REJECTED{{end}}{{if .Simulated}} (simulated){{end}}{{else}}—{{end}}</td>
<td>{{.Restarts}}</td>
<td>{{ago .StartedAt}}</td>
<td><code title="{{.ExpectedMeasurement}}">{{short .ExpectedMeasurement}}</code></td>
</tr>
{{end}}</tbody>
</table>
{{else}}<p id="no-cvms">No CVMs.</p>{{end}}
<p class="meta">API: <code>/v1/cvms</code> · <a href="openapi.yaml">openapi.yaml</a> · <a href="metrics">metrics</a></p>
</body>
</html>
`))

func (s *Server) statusPage(w http.ResponseWriter, r *http.Request) {
	if !s.hostAllowed(r) {
		// DNS rebinding: a page of another site whose name now resolves
		// to this host must not read the status.
		s.log.Warn("status page: unknown Host refused", "host", r.Host, "remote", r.RemoteAddr)
		http.Error(w, fmt.Sprintf("unknown host %q: open the status page as localhost, 127.0.0.1, the configured listen address or a name in the agent's certificate", r.Host), http.StatusForbidden)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
	data := struct {
		H    api.Health
		CVMs []api.CVM
	}{s.Health(), s.mgr.List()}
	if err := statusTmpl.Execute(w, data); err != nil {
		s.log.Error("status page", "err", err)
	}
}
