//! What a shell script runs and which host files it names, read from its text without running it.
//!
//! Not a shell parser: a lexer that knows quotes, command substitution, here-documents,
//! redirections, `for`/`case` heads and case patterns, which is what it takes to tell a word in
//! command position (`mmdebstrap --variant=apt ...`) from an argument, a keyword, an assignment or
//! a function the script defines. Words that start with an expansion (`"$STAGE/vgpuctl"`) or a
//! relative path (`packaging/build.sh`) are the project's own and are not reported. Text inside
//! single quotes (sed programs, `trap` and `sh -c` bodies, scripts written for a guest) is data.

/// One use of something outside the script: a program it runs or an absolute host path it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Use {
    pub line: usize,
    pub what: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// A word: its text with quotes removed, every expansion as `$` and single-quoted text as `'`.
    Word { text: String, line: usize },
    /// `;` `&&` `||` `|` `&` newline `(` `)`: a command may follow.
    Sep(&'static str),
    /// `;;`: the next case pattern follows.
    CaseEnd,
    /// `<` `>` `>>` `2>` ...: the next word is its target.
    Redir,
    /// `<<WORD`: the body, skipped, starts on the next line.
    Heredoc,
}

/// Everything a script (or a command substitution inside it) runs, with the absolute paths it
/// names; `library` holds the functions of the files it sources.
pub fn uses(text: &str, library: &[String]) -> (Vec<Use>, Vec<Use>) {
    let mut lx = Lexer::new(text);
    let toks = lx.tokens(None);
    let mut functions = function_names(&toks);
    functions.extend_from_slice(library);
    let mut programs = commands(&toks, &functions);
    let mut paths = absolute_paths(&toks);
    for sub in std::mem::take(&mut lx.subs) {
        programs.extend(commands(&sub, &functions));
        paths.extend(absolute_paths(&sub));
    }
    (programs, paths)
}

/// The functions a script defines, for the scripts that source it.
pub fn functions(text: &str) -> Vec<String> {
    function_names(&Lexer::new(text).tokens(None))
}

/// The files a script sources (`source F`, `. F`), as written.
pub fn sourced(text: &str) -> Vec<String> {
    let toks = Lexer::new(text).tokens(None);
    toks.windows(2)
        .filter_map(|w| match w {
            [Tok::Word { text: cmd, .. }, Tok::Word { text: file, .. }]
                if cmd == "source" || cmd == "." =>
            {
                Some(file.clone())
            }
            _ => None,
        })
        .collect()
}

const BUILTINS: &[&str] = &[
    ".", ":", "[", "[[", "alias", "break", "cd", "command", "continue", "declare", "echo", "eval",
    "exec", "exit", "export", "false", "getopts", "hash", "kill", "let", "local", "mapfile",
    "printf", "pwd", "read", "readonly", "return", "set", "shift", "source", "test", "trap",
    "true", "type", "ulimit", "umask", "unset", "wait",
];
const KEYWORDS: &[&str] = &[
    "if", "then", "else", "elif", "fi", "do", "done", "while", "until", "!", "{", "}", "time",
    "esac", "in", "function",
];
/// Words after which the command position continues (`exec qemu ...`, `command -v cargo-deb`).
const PREFIXES: &[&str] = &["exec", "command", "sudo", "nice", "env", "xargs"];

struct Lexer<'a> {
    s: &'a [u8],
    i: usize,
    line: usize,
    /// Command substitutions met on the way, each lexed as a script of its own.
    subs: Vec<Vec<Tok>>,
    /// Here-document delimiters whose bodies start after the current line.
    heredocs: Vec<String>,
}

impl Lexer<'_> {
    fn new(text: &str) -> Lexer<'_> {
        Lexer {
            s: text.as_bytes(),
            i: 0,
            line: 1,
            subs: Vec::new(),
            heredocs: Vec::new(),
        }
    }

    fn peek(&self, k: usize) -> u8 {
        *self.s.get(self.i + k).unwrap_or(&0)
    }

    /// Tokens up to the end of the text, or up to the unmatched `close` of a substitution.
    fn tokens(&mut self, close: Option<u8>) -> Vec<Tok> {
        let mut out = Vec::new();
        while self.i < self.s.len() {
            let c = self.peek(0);
            match c {
                b' ' | b'\t' => self.i += 1,
                b'\\' if self.peek(1) == b'\n' => {
                    self.i += 2;
                    self.line += 1;
                }
                b'\n' => {
                    self.i += 1;
                    self.line += 1;
                    self.skip_heredocs();
                    out.push(Tok::Sep("\n"));
                }
                b'#' => self.skip_comment(),
                b')' if close == Some(b')') => {
                    self.i += 1;
                    return out;
                }
                b'`' if close == Some(b'`') => {
                    self.i += 1;
                    return out;
                }
                b';' | b'&' | b'|' | b'(' | b')' => out.push(self.operator()),
                b'<' | b'>' => out.push(self.redirection()),
                _ => out.push(self.word()),
            }
        }
        out
    }

    fn operator(&mut self) -> Tok {
        let two = [self.peek(0), self.peek(1)];
        let (tok, n) = match &two {
            b";;" => (Tok::CaseEnd, 2),
            b"&&" => (Tok::Sep("&&"), 2),
            b"||" => (Tok::Sep("||"), 2),
            b"&>" => (Tok::Redir, 2),
            b"|&" => (Tok::Sep("|"), 2),
            [b';', _] => (Tok::Sep(";"), 1),
            [b'&', _] => (Tok::Sep("&"), 1),
            [b'|', _] => (Tok::Sep("|"), 1),
            [b'(', _] => (Tok::Sep("("), 1),
            _ => (Tok::Sep(")"), 1),
        };
        self.i += n;
        tok
    }

    fn redirection(&mut self) -> Tok {
        if self.peek(0) == b'<' && self.peek(1) == b'<' && self.peek(2) != b'<' {
            self.i += 2;
            if self.peek(0) == b'-' {
                self.i += 1;
            }
            while self.peek(0) == b' ' {
                self.i += 1;
            }
            let start = self.i;
            while !matches!(
                self.peek(0),
                0 | b' ' | b'\t' | b'\n' | b';' | b'&' | b'|' | b'<' | b'>'
            ) {
                self.i += 1;
            }
            let delim = String::from_utf8_lossy(&self.s[start..self.i]);
            self.heredocs.push(delim.replace(['\'', '"', '\\'], ""));
            return Tok::Heredoc;
        }
        while matches!(self.peek(0), b'<' | b'>' | b'&') {
            self.i += 1;
        }
        Tok::Redir
    }

    fn skip_comment(&mut self) {
        while self.i < self.s.len() && self.peek(0) != b'\n' {
            self.i += 1;
        }
    }

    fn skip_heredocs(&mut self) {
        for delim in std::mem::take(&mut self.heredocs) {
            while self.i < self.s.len() {
                let end = self.s[self.i..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(self.s.len(), |p| self.i + p);
                let body_line = String::from_utf8_lossy(&self.s[self.i..end]).into_owned();
                self.i = (end + 1).min(self.s.len());
                self.line += 1;
                if body_line.trim() == delim {
                    break;
                }
            }
        }
    }

    /// One word; a leading `N` of `N>file` makes it a redirection.
    fn word(&mut self) -> Tok {
        let line = self.line;
        let mut text = String::new();
        while self.i < self.s.len() {
            let c = self.peek(0);
            match c {
                b'(' if text.ends_with('=') => {
                    self.skip_balanced(b'(', b')');
                    text.push_str("()");
                }
                b' ' | b'\t' | b'\n' | b';' | b'&' | b'|' | b'(' | b')' => break,
                b'<' | b'>' if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) => {
                    return self.redirection();
                }
                b'<' | b'>' => break,
                b'\\' => {
                    text.push(self.peek(1) as char);
                    self.i += 2;
                }
                b'\'' => {
                    self.single_quoted();
                    text.push('\'');
                }
                b'"' => self.double_quoted(&mut text),
                b'$' => self.expansion(&mut text),
                b'`' => {
                    self.i += 1;
                    let sub = self.tokens(Some(b'`'));
                    self.subs.push(sub);
                    text.push('$');
                }
                _ => {
                    text.push(c as char);
                    self.i += 1;
                }
            }
        }
        Tok::Word { text, line }
    }

    fn single_quoted(&mut self) {
        self.i += 1;
        while self.i < self.s.len() && self.peek(0) != b'\'' {
            if self.peek(0) == b'\n' {
                self.line += 1;
            }
            self.i += 1;
        }
        self.i += 1;
    }

    fn double_quoted(&mut self, text: &mut String) {
        self.i += 1;
        while self.i < self.s.len() && self.peek(0) != b'"' {
            match self.peek(0) {
                b'\\' => {
                    text.push(self.peek(1) as char);
                    self.i += 2;
                }
                b'$' => self.expansion(text),
                c => {
                    if c == b'\n' {
                        self.line += 1;
                    }
                    text.push(c as char);
                    self.i += 1;
                }
            }
        }
        self.i += 1;
    }

    /// `$x`, `${...}`, `$((...))` and `$(...)`; the last is lexed as a script of its own.
    fn expansion(&mut self, text: &mut String) {
        text.push('$');
        self.i += 1;
        match (self.peek(0), self.peek(1)) {
            (b'(', b'(') => self.skip_balanced(b'(', b')'),
            (b'(', _) => {
                self.i += 1;
                let sub = self.tokens(Some(b')'));
                self.subs.push(sub);
            }
            (b'{', _) => self.skip_balanced(b'{', b'}'),
            _ => {
                while self.peek(0).is_ascii_alphanumeric() || self.peek(0) == b'_' {
                    self.i += 1;
                }
                if matches!(self.peek(0), b'@' | b'*' | b'#' | b'?' | b'$' | b'!') {
                    self.i += 1;
                }
            }
        }
    }

    fn skip_balanced(&mut self, open: u8, close: u8) {
        let mut depth = 0usize;
        while self.i < self.s.len() {
            let c = self.peek(0);
            self.i += 1;
            if c == open {
                depth += 1;
            } else if c == close {
                depth -= 1;
                if depth == 0 {
                    return;
                }
            }
        }
    }
}

/// Names of the functions a script defines (`name() {`), which are not programs.
fn function_names(toks: &[Tok]) -> Vec<String> {
    toks.windows(3)
        .filter_map(|w| match w {
            [Tok::Word { text, .. }, Tok::Sep("("), Tok::Sep(")")] => Some(text.clone()),
            _ => None,
        })
        .collect()
}

#[derive(PartialEq)]
enum Mode {
    Normal,
    /// After `for`: the variable and its list, up to `do`.
    ForHead,
    /// After `case`: the word, up to `in`.
    CaseHead,
    /// A case pattern, up to its `)`.
    CasePattern,
}

/// The words in command position that name programs outside the script.
fn commands(toks: &[Tok], functions: &[String]) -> Vec<Use> {
    let mut out = Vec::new();
    let mut mode = Mode::Normal;
    let mut at_command = true;
    let mut wrapper = Wrapper::None;
    let mut redirect_target = false;
    for tok in toks {
        let (text, line) = match tok {
            Tok::Sep(s) => {
                if mode == Mode::CasePattern && *s == ")" {
                    mode = Mode::Normal;
                }
                at_command = true;
                wrapper = Wrapper::None;
                continue;
            }
            Tok::CaseEnd => {
                mode = Mode::CasePattern;
                continue;
            }
            Tok::Redir => {
                redirect_target = true;
                continue;
            }
            Tok::Heredoc => continue,
            Tok::Word { text, line } => (text.as_str(), *line),
        };
        if std::mem::take(&mut redirect_target) {
            continue;
        }
        match mode {
            Mode::CasePattern if text == "esac" => mode = Mode::Normal,
            Mode::CasePattern => {}
            Mode::ForHead if text == "do" => {
                mode = Mode::Normal;
                at_command = true;
            }
            Mode::ForHead => {}
            Mode::CaseHead if text == "in" => mode = Mode::CasePattern,
            Mode::CaseHead => {}
            Mode::Normal if wrapper == Wrapper::Cargo => {
                if let Some(tool) = cargo_tool(text) {
                    out.push(Use { line, what: tool });
                }
                if !text.starts_with(['+', '-']) {
                    wrapper = Wrapper::None;
                }
            }
            Mode::Normal if !at_command => {}
            Mode::Normal if wrapper.takes(text) => {}
            Mode::Normal => {
                match text {
                    "for" => mode = Mode::ForHead,
                    "case" => mode = Mode::CaseHead,
                    _ => {}
                }
                wrapper = Wrapper::of(text);
                at_command = next_is_command(text);
                if is_program(text, functions) {
                    out.push(Use {
                        line,
                        what: text.to_string(),
                    });
                }
            }
        }
    }
    out
}

/// A program or function that runs the command in its arguments, after arguments of its own.
#[derive(PartialEq)]
enum Wrapper {
    None,
    /// `timeout [-k T] [-s SIG] DURATION COMMAND...`
    Timeout {
        value_next: bool,
    },
    /// The e2e runner's `logged LOG COMMAND...`
    Logged,
    /// `cargo [+TOOLCHAIN] SUBCOMMAND`: a subcommand cargo lacks is the program `cargo-SUBCOMMAND`.
    Cargo,
}

/// cargo's own subcommands; any other runs a `cargo-NAME` program from PATH.
const CARGO_BUILTINS: &[&str] = &[
    "bench", "build", "check", "clean", "doc", "fetch", "help", "init", "install", "metadata",
    "new", "package", "publish", "run", "rustc", "rustdoc", "search", "test", "tree", "update",
    "version",
];

/// The program `cargo WORD` runs besides cargo itself, if any.
fn cargo_tool(word: &str) -> Option<String> {
    let plain = word.bytes().all(|b| b.is_ascii_lowercase() || b == b'-');
    (plain && !word.starts_with('-') && !CARGO_BUILTINS.contains(&word))
        .then(|| format!("cargo-{word}"))
}

impl Wrapper {
    fn of(word: &str) -> Wrapper {
        match word {
            "timeout" => Wrapper::Timeout { value_next: false },
            "logged" => Wrapper::Logged,
            "cargo" => Wrapper::Cargo,
            _ => Wrapper::None,
        }
    }

    /// Whether `word` is the wrapper's own argument (and not the command it runs).
    fn takes(&mut self, word: &str) -> bool {
        match self {
            Wrapper::None | Wrapper::Cargo => false,
            Wrapper::Timeout { value_next: true } => {
                *self = Wrapper::Timeout { value_next: false };
                true
            }
            Wrapper::Timeout { .. } if word.starts_with('-') => {
                *self = Wrapper::Timeout {
                    value_next: matches!(word, "-k" | "-s" | "--kill-after" | "--signal"),
                };
                true
            }
            Wrapper::Timeout { .. } | Wrapper::Logged => {
                *self = Wrapper::None;
                true
            }
        }
    }
}

/// Whether the word after `word` (in command position) is a command again.
fn next_is_command(word: &str) -> bool {
    KEYWORDS.contains(&word)
        || PREFIXES.contains(&word)
        || is_assignment(word)
        || word == "timeout"
        || word == "logged"
}

fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'+')
    })
}

fn is_program(word: &str, functions: &[String]) -> bool {
    !(word.is_empty()
        || word.starts_with(['$', '\'', '-'])
        || word.bytes().all(|b| b.is_ascii_digit())
        || (word.contains('/') && !word.starts_with('/'))
        || is_assignment(word)
        || BUILTINS.contains(&word)
        || KEYWORDS.contains(&word)
        || functions.iter().any(|f| f == word)
        || ["for", "case"].contains(&word))
}

/// Absolute paths a script names outside quotes or in double quotes: as a word, as the value of
/// `NAME=` or `--opt=`, or in a `:` list. A path with an expansion in it becomes a glob (`*`).
fn absolute_paths(toks: &[Tok]) -> Vec<Use> {
    let mut out = Vec::new();
    for tok in toks {
        let Tok::Word { text, line } = tok else {
            continue;
        };
        for part in text.split(['=', ':', '\'', '"', ',', ' ', '\t', '\n']) {
            let named = part
                .as_bytes()
                .get(1)
                .is_some_and(|b| b.is_ascii_alphanumeric());
            if part.starts_with('/') && named {
                out.push(Use {
                    line: *line,
                    what: part.replace('$', "*"),
                });
            }
        }
    }
    out
}
