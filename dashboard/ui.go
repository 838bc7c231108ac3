package dashboard

import (
	"io/fs"
	"net/http"
	"os"
	"path"
	"strings"
)

// NVFlare's web UI (a static Next.js export in the nvflare wheel,
// nvflare/dashboard/application/static) talks to /nvflare-dashboard/api/v1,
// so our API serves it unchanged when pointed at that folder (--ui): the
// same routes as NVFlare's Flask app. We do not ship it.

// uiPages are the pages NVFlare's app serves as /nvflare-dashboard/<page>.
var uiPages = map[string]bool{
	"application-config": true, "downloads": true, "logout": true, "project-admin-dashboard": true,
	"project-configuration": true, "registration-form": true, "server-config": true,
	"site-dashboard": true, "user-dashboard": true,
}

// uiHandler serves dir (the static folder) the way NVFlare's Flask app
// does: / and /nvflare-dashboard are index.html, /nvflare-dashboard/<page>
// is <page>.html, and every other path is a file under dir (no listings).
func uiHandler(dir string) http.Handler {
	root := os.DirFS(dir)
	files := http.FileServerFS(root)
	serve := func(w http.ResponseWriter, r *http.Request, name string) {
		http.ServeFileFS(w, r, root, name)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		switch {
		case p == "/" || p == "/nvflare-dashboard" || p == "/nvflare-dashboard/":
			serve(w, r, "nvflare-dashboard/index.html")
			return
		case strings.HasPrefix(p, "/nvflare-dashboard/") && uiPages[strings.TrimPrefix(p, "/nvflare-dashboard/")]:
			page := "nvflare-dashboard/" + strings.TrimPrefix(p, "/nvflare-dashboard/") + ".html"
			if _, err := fs.Stat(root, page); err != nil && p == "/nvflare-dashboard/application-config" {
				http.Redirect(w, r, "/nvflare-dashboard/project-configuration", http.StatusFound)
				return
			}
			serve(w, r, page)
			return
		}
		name := strings.TrimPrefix(path.Clean(p), "/")
		if fi, err := fs.Stat(root, name); err != nil || fi.IsDir() {
			http.NotFound(w, r)
			return
		}
		files.ServeHTTP(w, r)
	})
}
