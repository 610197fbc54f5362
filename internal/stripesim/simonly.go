package stripesim

import (
	"html/template"
	"net/http"
	"strings"
)

// simPrefix starts the simulator-only endpoints. They are outside /v1 so
// nobody mistakes them for Stripe's API, and, like Stripe's hosted test
// pages they stand in for, they need no API key.
const simPrefix = "/_sim/"

// serveSim answers the simulator-only endpoints:
//
//	GET  /_sim/payment_intents/{id}/authenticate   the hosted 3-D Secure test page
//	POST /_sim/payment_intents/{id}/authenticate   outcome=succeed|fail
//	POST /_sim/payment_intents/{id}/settle         outcome=succeed|fail
//	POST /_sim/refunds/{id}/settle                 outcome=succeed|fail
//
// A POST answers the object (200) or a Stripe-shaped error; one from
// the hosted page's form (redirect=true) is sent on to the return_url
// instead, as Stripe's page does.
func (s *Sim) serveSim(w http.ResponseWriter, r *http.Request) {
	x := &exchange{method: r.Method, path: r.URL.Path, reqID: "req_sim"}
	kind, rest, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, simPrefix), "/")
	id, action, ok := strings.Cut(rest, "/")
	known := kind == "payment_intents" && (action == "authenticate" || action == "settle") ||
		kind == "refunds" && action == "settle"
	page := kind == "payment_intents" && action == "authenticate" && r.Method == http.MethodGet
	if !ok || id == "" || !known || (r.Method != http.MethodPost && !page) {
		s.write(w, x, notFoundURL(r.Method, r.URL.Path).response())
		return
	}
	if page {
		s.hostedPage(w, x, id)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	if err := r.ParseForm(); err != nil {
		s.write(w, x, invalidValue("", "Invalid request: could not parse the form-encoded body").response())
		return
	}
	var succeed bool
	switch o := r.PostForm.Get("outcome"); o {
	case "succeed", "fail":
		succeed = o == "succeed"
	case "":
		s.write(w, x, paramMissing("outcome").response())
		return
	default:
		s.write(w, x, invalidValue("outcome", "Invalid outcome: must be one of succeed or fail").response())
		return
	}
	s.mu.Lock()
	now := s.clock.Now()
	s.applyDueLocked(now)
	var (
		js []byte
		f  *failure
	)
	switch {
	case kind == "refunds":
		js, f = s.settleRefundLocked(id, succeed, now)
	case action == "authenticate":
		js, f = s.authenticateLocked(id, succeed, now)
	default:
		js, f = s.settleLocked(id, succeed, now)
	}
	var returnURL, secret string
	if pr := s.pis.byID[id]; pr != nil {
		returnURL, secret = pr.obj.returnURL, pr.obj.ClientSecret
	}
	s.mu.Unlock()
	if f != nil {
		s.write(w, x, f.response())
		return
	}
	if r.PostForm.Get("redirect") == "true" && returnURL != "" {
		status := "succeeded"
		if !succeed {
			status = "failed"
		}
		sep := "?"
		if strings.Contains(returnURL, "?") {
			sep = "&"
		}
		http.Redirect(w, r, returnURL+sep+"payment_intent="+id+"&payment_intent_client_secret="+secret+"&redirect_status="+status, http.StatusSeeOther)
		return
	}
	s.write(w, x, response{status: 200, body: js})
}

var hostedTmpl = template.Must(template.New("3ds").Parse(`<!doctype html>
<title>stripesim 3D Secure test page</title>
<h1>3D Secure test payment</h1>
<p>PaymentIntent {{.}} (stripesim, not Stripe)</p>
<form method="post"><input type="hidden" name="redirect" value="true">
<button name="outcome" value="succeed">Complete authentication</button>
<button name="outcome" value="fail">Fail authentication</button>
</form>
`))

// hostedPage serves the stand-in for Stripe's hosted 3-D Secure test page.
func (s *Sim) hostedPage(w http.ResponseWriter, x *exchange, id string) {
	s.mu.Lock()
	r := s.pis.byID[id]
	s.mu.Unlock()
	if r == nil {
		s.write(w, x, resourceMissing(404, "intent", "payment_intent", id).response())
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_ = hostedTmpl.Execute(w, id) // the client going away is its own business
}
