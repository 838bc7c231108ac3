resource "flare_admin" "lead" {
  project_id = flare_project.example.id
  name       = "lead@hospital-a.org"
  org        = "hospital_a"
  role       = "lead"
}
