// Placeholder: filled in by the spf_record work.
namespace tern::mailauth {}
