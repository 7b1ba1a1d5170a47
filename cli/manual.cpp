#include "cli/manual.h"

#include <algorithm>
#include <cctype>

#include <fmt/format.h>

#include "cli/app.h"

namespace imapstage::cli {
namespace {

// Commands shown in help: named, in a group, enabled (CLI11 hides a
// subcommand whose group is empty).
std::vector<const CLI::App*> commands_of(const CLI::App& app) {
  return app.get_subcommands([](const CLI::App* sub) {
    return !sub->get_name().empty() && !sub->get_group().empty() && !sub->get_disabled();
  });
}

// Options shown in help (not the hidden ones, whose group is empty), the
// app's own and those of its unnamed option groups, in declaration order.
std::vector<const CLI::Option*> options_of(const CLI::App& app, bool positional) {
  std::vector<const CLI::Option*> out;
  auto take = [&](const CLI::App& from) {
    for (const CLI::Option* opt : from.get_options()) {
      if (opt->get_group().empty() || opt->get_positional() != positional) continue;
      out.push_back(opt);
    }
  };
  take(app);
  for (const CLI::App* group : app.get_subcommands([](const CLI::App* sub) { return sub->get_name().empty(); }))
    take(*group);
  return out;
}

// A flag expects no value (CLI11 gives flags expected(0)).
bool takes_value(const CLI::Option& opt) { return opt.get_expected_max() > 0 && opt.get_type_size() != 0; }

bool is_help(const CLI::Option& opt) {
  for (const auto& l : opt.get_lnames())
    if (l == "help" || l == "help-all") return true;
  return false;
}

// A description with a full stop, so notes can follow it.
std::string sentence(std::string text) {
  while (!text.empty() && text.back() == ' ') text.pop_back();
  if (!text.empty() && text.back() != '.' && text.back() != ')' && text.back() != '?') text += '.';
  else if (!text.empty() && text.back() == ')') text += '.';
  return text;
}

bool repeatable(const CLI::Option& opt) {
  return opt.get_expected_max() >= CLI::detail::expected_max_vector_size || opt.get_multi_option_policy() ==
                                                                                 CLI::MultiOptionPolicy::TakeAll;
}

// The fixed set an option's value must be one of (a CLI::IsMember check
// shows it in the type name as ":{a,b,c}"), or empty.
std::vector<std::string> choices_of(const CLI::Option& opt) {
  std::string type = opt.get_type_name();
  auto open = type.find(":{");
  auto close = type.find('}', open == std::string::npos ? 0 : open);
  std::vector<std::string> out;
  if (open == std::string::npos || close == std::string::npos) return out;
  std::string list = type.substr(open + 2, close - open - 2);
  size_t start = 0;
  while (start <= list.size()) {
    size_t comma = list.find(',', start);
    if (comma == std::string::npos) comma = list.size();
    if (comma > start) out.push_back(list.substr(start, comma - start));
    start = comma + 1;
  }
  return out;
}

// Every name of an option: "-v", "--verbose".
std::vector<std::string> names_of(const CLI::Option& opt) {
  std::vector<std::string> out;
  for (const auto& s : opt.get_snames()) out.push_back("-" + s);
  for (const auto& l : opt.get_lnames()) out.push_back("--" + l);
  return out;
}

// "imapstage", "imapstage bundle", "imapstage bundle create".
std::string command_path(const CLI::App& app) {
  std::string path = app.get_name();
  for (const CLI::App* p = app.get_parent(); p != nullptr; p = p->get_parent()) path = p->get_name() + " " + path;
  return path;
}

// --- roff ----------------------------------------------------------------------

// Text for a roff line: backslashes and minus signs escaped, no line break,
// nothing a formatter reads as a request.
std::string roff(std::string_view text) {
  std::string out;
  for (char c : text) {
    if (c == '\\') out += "\\e";
    else if (c == '-') out += "\\-";
    else if (c == '\n' || c == '\r') out += ' ';
    else out += c;
  }
  if (!out.empty() && (out[0] == '.' || out[0] == '\'')) out.insert(0, "\\&");
  return out;
}

std::string upper(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

// The placeholder of an option's value: "TEXT", "UINT", "FILE", ... without the choices.
std::string value_label(const CLI::Option& opt) {
  std::string type = opt.get_type_name();
  auto colon = type.find(':');
  if (colon != std::string::npos) {
    std::string rest = type.substr(colon + 1);
    // A file check names the value better than its type ("TEXT:FILE" is a FILE).
    type = (rest == "FILE" || rest == "DIR" || rest == "PATH(existing)") ? rest : type.substr(0, colon);
  }
  return type.empty() ? "VALUE" : type;
}

void option_item(std::string& out, const CLI::Option& opt) {
  std::string head;
  for (const auto& name : names_of(opt)) head += (head.empty() ? "" : ", ") + fmt::format("\\fB{}\\fR", roff(name));
  if (takes_value(opt)) head += fmt::format(" \\fI{}\\fR", roff(value_label(opt)));
  out += ".TP\n" + head + "\n" + roff(sentence(opt.get_description()));
  std::vector<std::string> notes;
  auto choices = choices_of(opt);
  if (!choices.empty()) {
    std::string list;
    for (const auto& c : choices) list += (list.empty() ? "" : ", ") + c;
    notes.push_back("One of: " + list + ".");
  }
  if (!opt.get_default_str().empty()) notes.push_back("Default: " + opt.get_default_str() + ".");
  if (opt.get_required()) notes.push_back("Required.");
  if (takes_value(opt) && repeatable(opt)) notes.push_back("May be given more than once.");
  if (!opt.get_envname().empty()) notes.push_back("Environment: " + opt.get_envname() + ".");
  for (const auto* other : opt.get_excludes()) notes.push_back("Not with " + other->get_name() + ".");
  for (const auto* other : opt.get_needs()) notes.push_back("Needs " + other->get_name() + ".");
  for (const auto& n : notes) out += " " + roff(n);
  out += "\n";
}

void positional_item(std::string& out, const CLI::Option& opt) {
  out += fmt::format(".TP\n\\fI{}\\fR\n{}", roff(opt.get_name(true)), roff(opt.get_description()));
  if (!opt.get_required()) out += " (optional)";
  out += "\n";
}

// ".B imapstage export" and its arguments.
std::string synopsis(const CLI::App& app) {
  std::string out = fmt::format(".B {}\n", roff(command_path(app)));
  std::string rest;
  bool has_commands = !commands_of(app).empty();
  if (has_commands) rest += "\\fICOMMAND\\fR ";
  rest += "[\\fIOPTIONS\\fR]";
  for (const auto* opt : options_of(app, true)) {
    std::string name = fmt::format("\\fI{}\\fR", roff(upper(opt->get_name(true))));
    if (repeatable(*opt)) name += "\\ .\\|.\\|.";
    rest += opt->get_required() ? " " + name : " [" + name + "]";
  }
  return out + rest + "\n";
}

void options_sections(std::string& out, const CLI::App& app, const char* heading, bool subsection) {
  auto positionals = options_of(app, true);
  if (!positionals.empty()) {
    out += subsection ? ".PP\nArguments:\n" : ".SH ARGUMENTS\n";
    for (const auto* opt : positionals) positional_item(out, *opt);
  }
  auto options = options_of(app, false);
  // A nested command's --help is the same as its parent's: listed once, on the page's own OPTIONS.
  if (subsection) std::erase_if(options, [](const CLI::Option* opt) { return is_help(*opt); });
  if (options.empty()) return;
  // Groups in the order their first option appears; "Options" (CLI11's default) first.
  std::vector<std::string> groups;
  for (const auto* opt : options)
    if (std::find(groups.begin(), groups.end(), opt->get_group()) == groups.end()) groups.push_back(opt->get_group());
  std::stable_partition(groups.begin(), groups.end(), [](const std::string& g) { return g == "Options"; });
  for (const auto& group : groups) {
    if (subsection) out += group == "Options" ? ".PP\nOptions:\n" : fmt::format(".PP\n{} options:\n", roff(group));
    else if (group == "Options") out += fmt::format(".SH {}\n", heading);
    else out += fmt::format(".SH \"{} OPTIONS\"\n", roff(upper(group)));
    for (const auto* opt : options)
      if (opt->get_group() == group) option_item(out, *opt);
  }
}

std::string page_header(std::string_view name, std::string_view version) {
  // No date: the page is the same whenever it is built.
  return fmt::format(
      ".\\\" Generated from imapstage's command line by imapstage-docs; do not edit.\n"
      ".TH {} 1 \"\" \"imapstage {}\" \"imapstage manual\"\n",
      roff(upper(name)), roff(version));
}

std::string page_name(const CLI::App& command) { return "imapstage-" + command.get_name(); }

void exit_status_section(std::string& out) {
  out += ".SH \"EXIT STATUS\"\n";
  for (const auto& e : kExitCodeMeanings) out += fmt::format(".TP\n.B {}\n{}\n", e.code, roff(e.meaning));
}

// --- shell -----------------------------------------------------------------------

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& i : items) out += (out.empty() ? "" : " ") + i;
  return out;
}

// Every app in the tree below (and including) `app`, parents first.
void walk(const CLI::App& app, std::vector<const CLI::App*>& out) {
  out.push_back(&app);
  for (const auto* sub : commands_of(app)) walk(*sub, out);
}

// The command path below the root: "" for the root, "bundle create".
std::string sub_path(const CLI::App& app) {
  std::string path = command_path(app);
  auto space = path.find(' ');
  return space == std::string::npos ? "" : path.substr(space + 1);
}

// Single-quoted for sh.
std::string sh_quote(std::string_view s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// A description for a completion menu: its first sentence, on one line.
std::string short_description(std::string_view text) {
  std::string s(text);
  for (auto& c : s)
    if (c == '\n') c = ' ';
  for (size_t i = 0; i + 1 < s.size(); ++i)
    if ((s[i] == '.' || s[i] == ';' || s[i] == ':') && s[i + 1] == ' ') return s.substr(0, i);
  if (!s.empty() && s.back() == '.') s.pop_back();
  return s;
}

// Inside a zsh _arguments spec's [...] or a describe item: brackets and colons escaped.
std::string zsh_text(std::string_view text) {
  std::string out;
  for (char c : short_description(text)) {
    if (c == '[' || c == ']' || c == ':' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}

std::string zsh_function(const CLI::App& app) {
  std::string path = sub_path(app);
  if (path.empty()) return "_imapstage";
  std::string name = "_imapstage_";
  for (char c : path) name += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
  return name;
}

std::string zsh_option_spec(const CLI::Option& opt) {
  auto names = names_of(opt);
  std::string spec;
  std::string prefix = repeatable(opt) ? "*" : "";
  if (names.size() > 1) {
    std::string exclusion = "(" + join(names) + ")";
    std::string braces;
    for (const auto& n : names) braces += (braces.empty() ? "" : ",") + n;
    spec = (prefix.empty() ? sh_quote(exclusion) : sh_quote(prefix)) + "{" + braces + "}";
  } else {
    spec = prefix + names.front();
  }
  std::string rest = "[" + zsh_text(opt.get_description()) + "]";
  if (takes_value(opt)) {
    auto choices = choices_of(opt);
    std::string label = value_label(opt);
    for (auto& c : label) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (!choices.empty()) rest += ":" + label + ":(" + join(choices) + ")";
    else rest += ":" + label + ":_files";
  }
  if (names.size() > 1) return spec + sh_quote(rest);
  return sh_quote(spec + rest);
}

}  // namespace

std::string root_man_page(const CLI::App& root, std::string_view version) {
  std::string out = page_header("imapstage", version);
  out += ".SH NAME\nimapstage \\- export IMAP mailboxes into a verifiable archive, and import them elsewhere\n";
  out += ".SH SYNOPSIS\n" + synopsis(root);
  out += ".SH DESCRIPTION\n" + roff(root.get_description()) + "\n";
  out += ".PP\nEach command has a manual page of its own, named below, and prints its options with "
         "\\fB\\-\\-help\\fR.\n";
  options_sections(out, root, "OPTIONS", false);
  out += ".SH COMMANDS\n";
  for (const auto* cmd : commands_of(root))
    out += fmt::format(".TP\n.BR {} (1)\n{}\n", roff(page_name(*cmd)), roff(cmd->get_description()));
  exit_status_section(out);
  out += ".SH \"SEE ALSO\"\n";
  out += "The archive format: /usr/share/doc/imapstage/FORMAT.md.gz; the guide: "
         "/usr/share/doc/imapstage/README.md.gz.\n";
  return out;
}

std::string command_man_page(const CLI::App& command, std::string_view version) {
  std::string out = page_header(page_name(command), version);
  out += fmt::format(".SH NAME\n{} \\- {}\n", roff(page_name(command)), roff(short_description(command.get_description())));
  out += ".SH SYNOPSIS\n" + synopsis(command);
  auto subs = commands_of(command);
  for (const auto* sub : subs) out += ".br\n" + synopsis(*sub);
  out += ".SH DESCRIPTION\n" + roff(command.get_description()) + "\n";
  if (!command.get_footer().empty()) out += ".PP\n" + roff(command.get_footer()) + "\n";
  options_sections(out, command, "OPTIONS", false);
  if (!subs.empty()) {
    out += ".SH COMMANDS\n";
    std::vector<const CLI::App*> all;
    for (const auto* sub : subs) walk(*sub, all);
    for (const auto* sub : all) {
      out += fmt::format(".SS \"{}\"\n", roff(command_path(*sub)));
      out += synopsis(*sub);
      out += ".PP\n" + roff(sub->get_description()) + "\n";
      if (!sub->get_footer().empty()) out += ".PP\n" + roff(sub->get_footer()) + "\n";
      options_sections(out, *sub, "OPTIONS", true);
    }
  }
  exit_status_section(out);
  out += ".SH \"SEE ALSO\"\n.BR imapstage (1)\n";
  return out;
}

std::string bash_completion(const CLI::App& root) {
  std::vector<const CLI::App*> apps;
  walk(root, apps);
  std::string commands, options, valued, values;
  for (const auto* app : apps) {
    std::string key = sh_quote(sub_path(*app));
    std::vector<std::string> subs, opts, takes;
    for (const auto* sub : commands_of(*app)) subs.push_back(sub->get_name());
    for (const auto* opt : options_of(*app, false)) {
      for (const auto& n : names_of(*opt)) {
        opts.push_back(n);
        if (takes_value(*opt)) takes.push_back(n);
      }
      auto choices = choices_of(*opt);
      if (!choices.empty())
        for (const auto& n : names_of(*opt))
          values += fmt::format("    {}) echo {} ;;\n", sh_quote(sub_path(*app) + "|" + n), sh_quote(join(choices)));
    }
    if (!subs.empty()) commands += fmt::format("    {}) echo {} ;;\n", key, sh_quote(join(subs)));
    if (!opts.empty()) options += fmt::format("    {}) echo {} ;;\n", key, sh_quote(join(opts)));
    if (!takes.empty()) valued += fmt::format("    {}) echo {} ;;\n", key, sh_quote(join(takes)));
  }
  return fmt::format(
      R"SH(# bash completion for imapstage. Generated from its command line by imapstage-docs; do not edit.

# The subcommands, options, options that take a value, and fixed values of
# an option, for a command path ("" for imapstage itself, "bundle create").
_imapstage_commands() {{
  case "$1" in
{}  esac
}}
_imapstage_options() {{
  case "$1" in
{}  esac
}}
_imapstage_valued() {{
  case "$1" in
{}  esac
}}
_imapstage_values() {{
  case "$1|$2" in
{}  esac
}}

_imapstage() {{
  local cur=${{COMP_WORDS[COMP_CWORD]}} prev="" path="" word i
  (( COMP_CWORD > 0 )) && prev=${{COMP_WORDS[COMP_CWORD-1]}}
  for (( i = 1; i < COMP_CWORD; i++ )); do
    word=${{COMP_WORDS[i]}}
    if [[ " $(_imapstage_valued "$path") " == *" $word "* ]]; then
      (( i++ ))
    elif [[ " $(_imapstage_commands "$path") " == *" $word "* ]]; then
      path=${{path:+$path }}$word
    fi
  done
  if [[ $prev == -* && " $(_imapstage_valued "$path") " == *" $prev "* ]]; then
    local values
    values=$(_imapstage_values "$path" "$prev")
    if [[ -n $values ]]; then
      mapfile -t COMPREPLY < <(compgen -W "$values" -- "$cur")
    else
      compopt -o filenames 2>/dev/null
      mapfile -t COMPREPLY < <(compgen -f -- "$cur")
    fi
    return 0
  fi
  if [[ $cur == -* ]]; then
    mapfile -t COMPREPLY < <(compgen -W "$(_imapstage_options "$path")" -- "$cur")
    return 0
  fi
  local commands
  commands=$(_imapstage_commands "$path")
  if [[ -n $commands ]]; then
    mapfile -t COMPREPLY < <(compgen -W "$commands" -- "$cur")
  else
    compopt -o filenames 2>/dev/null
    mapfile -t COMPREPLY < <(compgen -f -- "$cur")
  fi
  return 0
}}
complete -F _imapstage imapstage
)SH",
      commands, options, valued, values);
}

std::string zsh_completion(const CLI::App& root) {
  std::vector<const CLI::App*> apps;
  walk(root, apps);
  std::string out =
      "#compdef imapstage\n"
      "# zsh completion for imapstage. Generated from its command line by imapstage-docs; do not edit.\n\n";
  // Functions for the inner commands first, the entry point last (zsh runs the file's body on first use).
  for (auto it = apps.rbegin(); it != apps.rend(); ++it) {
    const CLI::App& app = **it;
    std::string body;
    body += fmt::format("{}() {{\n", zsh_function(app));
    auto subs = commands_of(app);
    std::vector<std::string> specs;
    for (const auto* opt : options_of(app, false)) specs.push_back(zsh_option_spec(*opt));
    if (!subs.empty()) {
      body += "  local curcontext=\"$curcontext\" state line\n  local -a commands\n  commands=(\n";
      for (const auto* sub : subs)
        body += "    " + sh_quote(sub->get_name() + ":" + zsh_text(sub->get_description())) + "\n";
      body += "  )\n  _arguments -C -s -S";
      for (const auto& s : specs) body += " \\\n    " + s;
      body += " \\\n    '1: :->command' \\\n    '*:: :->args'\n";
      body += "  case $state in\n    command) _describe -t commands 'imapstage command' commands ;;\n";
      body += "    args)\n      case $words[1] in\n";
      for (const auto* sub : subs) body += fmt::format("        {}) {} ;;\n", sub->get_name(), zsh_function(*sub));
      body += "      esac ;;\n  esac\n}\n\n";
    } else {
      body += "  _arguments -s -S";
      for (const auto& s : specs) body += " \\\n    " + s;
      if (!options_of(app, true).empty()) body += " \\\n    '*: :_files'";
      body += "\n}\n\n";
    }
    out += body;
  }
  out += "_imapstage \"$@\"\n";
  return out;
}

std::vector<GeneratedFile> generated_docs(const CLI::App& root, std::string_view version) {
  std::vector<GeneratedFile> out;
  out.push_back({"man/imapstage.1", root_man_page(root, version)});
  for (const auto* cmd : commands_of(root))
    out.push_back({"man/" + page_name(*cmd) + ".1", command_man_page(*cmd, version)});
  out.push_back({"completion/imapstage", bash_completion(root)});
  out.push_back({"completion/_imapstage", zsh_completion(root)});
  return out;
}

}  // namespace imapstage::cli
