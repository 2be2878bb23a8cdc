// The reset-password and verify-email pages (app/routers/pages.py). Opening the page sends
// nothing: the token is taken from the address, removed from the address bar and history,
// and sent only when the user presses the button.
"use strict";

(function () {
  var body = document.body;
  var page = body.getAttribute("data-page");
  var endpoint = body.getAttribute("data-endpoint");
  var form = document.getElementById("form");
  var button = document.getElementById("submit");
  var message = document.getElementById("message");
  var problems = document.getElementById("problems");

  var token = new URLSearchParams(window.location.search).get("token");
  if (window.location.search || window.location.hash) {
    // Not left in the address bar, the history or a bookmark.
    window.history.replaceState(null, "", window.location.pathname);
  }

  var texts = {
    "reset-password": {
      noToken:
        "This page opens from the link in a password-reset email, and that link is " +
        "missing here. Open the link from the email again, or ask for a new one.",
      done:
        "Your password has been changed. You can now sign in with the new password; " +
        "every other session of your account has been signed out.",
      invalid:
        "This password-reset link is invalid, has expired or was already used. " +
        "Ask for a new password-reset email.",
      rules: "The new password was not accepted:",
    },
    "verify-email": {
      noToken:
        "This page opens from the link in a verification email, and that link is " +
        "missing here. Open the link from the email again, or ask for a new one.",
      done: "Your email address is verified. Thank you.",
      invalid:
        "This verification link is invalid, has expired or was already used. " +
        "Ask for a new verification email.",
      rules: "The request was not accepted:",
    },
  }[page];

  function show(text, kind, items) {
    message.textContent = text;
    message.className = "message " + kind;
    message.hidden = false;
    while (problems.firstChild) {
      problems.removeChild(problems.firstChild);
    }
    (items || []).forEach(function (item) {
      var li = document.createElement("li");
      li.textContent = item;
      problems.appendChild(li);
    });
    problems.hidden = !items || items.length === 0;
  }

  // FastAPI's 422 detail: a list of {loc, msg}; the password rules say "Value error, ...".
  function ruleMessages(detail) {
    if (!Array.isArray(detail)) {
      return [];
    }
    return detail.map(function (problem) {
      return String(problem.msg || "").replace(/^Value error, /, "");
    });
  }

  function answer(response) {
    if (response.status === 204 || response.ok) {
      form.hidden = true;
      show(texts.done, "success");
      return null;
    }
    return response
      .json()
      .catch(function () {
        return {};
      })
      .then(function (data) {
        if (response.status === 400 && data.code === "invalid_token") {
          form.hidden = true;
          show(texts.invalid, "error");
        } else if (response.status === 422) {
          show(texts.rules, "error", ruleMessages(data.detail));
        } else if (response.status === 429) {
          var wait = Number(response.headers.get("Retry-After"));
          show(
            "Too many attempts. Wait " +
              (wait > 0 ? wait + " seconds" : "a moment") +
              ", then try again.",
            "error"
          );
        } else {
          show(
            "The service could not complete this (error " +
              response.status +
              "). Try again in a moment.",
            "error"
          );
        }
      });
  }

  function payload() {
    if (page !== "reset-password") {
      return { token: token };
    }
    var password = document.getElementById("new-password").value;
    var again = document.getElementById("confirm-password").value;
    if (!password) {
      show("Enter a new password.", "error");
      return null;
    }
    if (password !== again) {
      show("The two passwords are not the same.", "error");
      return null;
    }
    return { token: token, new_password: password };
  }

  if (!token) {
    show(texts.noToken, "error");
    return;
  }
  form.hidden = false;

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var data = payload();
    if (data === null) {
      return;
    }
    button.disabled = true;
    show("Sending…", "pending");
    fetch(endpoint, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(data),
      credentials: "omit",
      cache: "no-store",
      referrerPolicy: "no-referrer",
    })
      .then(answer, function () {
        show(
          "The service could not be reached. Check your connection and try again.",
          "error"
        );
      })
      .then(function () {
        button.disabled = false;
      });
  });
})();
