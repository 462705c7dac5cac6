// captionlens serve: the live page around the shared viewer (viewer.js). It opens gallery images and uploads,
// asks the server for captions (the model's, with a beam size, or typed; or the model's continuation of a
// prefix when an alternative word is clicked) and for any method's maps, with or without a foil, and shows
// progress of long requests with a cancel button. Every request and its answer is JSON (see serve/app.py).
(function () {
  "use strict";
  const DATA = JSON.parse(document.getElementById("captionlens-data").textContent);
  const $ = (id) => document.getElementById(id);
  const END = "<END>";
  const state = { image: null, caption: null, entry: null, contrast: null, running: null, results: {} };
  window.captionlensServe = state;          // for the browser test: what arrived from the server

  function showError(message) {
    $("error").textContent = message || "";
    $("error").hidden = !message;
  }

  function say(message) { $("status").textContent = message; }

  async function call(method, url, body, form) {
    const options = { method: method, headers: {} };
    if (form) {
      options.body = form;
    } else if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    const response = await fetch(url, options);
    let data = null;
    try { data = await response.json(); } catch (err) { data = null; }
    if (!response.ok) {
      throw new Error(data && data.error ? data.error : url + ": " + response.status + " " + response.statusText);
    }
    return data;
  }

  // ---- long requests: progress and cancel ----

  function showProgress(answer) {
    state.running = answer.job;
    const p = answer.progress, label = p ? (DATA.labels[p.method] || p.method) : "";
    $("progress").hidden = false;
    $("progress-bar").max = p ? p.total : 1;
    $("progress-bar").value = p ? p.done : 0;
    $("progress-text").textContent = p ? label + ": " + p.done + " of " + p.total + " forward passes" : "waiting\u2026";
  }

  function hideProgress(job) {
    if (state.running === job) {
      state.running = null;
      $("progress").hidden = true;
    }
  }

  $("cancel").addEventListener("click", function () {
    if (state.running) call("DELETE", "/api/jobs/" + state.running).catch(function (err) { showError(err.message); });
  });

  // ---- maps: the viewer's sprites come from here ----

  function contrastBody() {
    if (!state.contrast) return null;
    const body = {};
    body[state.contrast.position] = state.contrast.word;
    return body;
  }

  function contrastKey() { return state.contrast ? state.contrast.position + ":" + state.contrast.word : ""; }

  async function maps(entry, method) {
    const contrast = contrastBody(), asked = contrastKey(), key = entry.key + "/" + method + "/" + asked;
    let answer = await call("POST", "/api/maps", { image: state.image.id, tokens: entry.tokens, method: method,
                                                   contrast: contrast });
    try {
      while (answer.status === "running") {
        showProgress(answer);
        answer = await call("GET", "/api/jobs/" + answer.job + "?wait=0.5");
      }
    } finally {
      hideProgress(answer.job);
    }
    if (answer.status === "cancelled") throw new Error((DATA.labels[method] || method) + " was cancelled");
    state.results[key] = answer.result;
    if (asked && asked === contrastKey()) viewer.redescribe();
    return answer.result;
  }

  function foilLogProb() {
    const c = state.contrast;
    if (!c || !state.caption) return null;
    const listed = state.caption.alternatives[c.position].find(function (a) { return a.word === c.word; });
    if (listed) return listed.log_prob;
    const found = Object.keys(state.results).filter(function (key) {
      return key.startsWith(state.entry.key + "/") && key.endsWith("/" + contrastKey());
    }).map(function (key) { return state.results[key].contrast[0]; })[0];
    return found ? found.log_prob : null;
  }

  const viewer = window.captionlensViewer({
    colormaps: DATA.colormaps,
    labels: DATA.labels,
    preferred: DATA.recommended,
    probabilities: true,
    sprite: function (entry, method) { return maps(entry, method).then(function (result) { return result.sprite; }); },
    spriteKey: function (entry, method) { return entry.key + "/" + method + "/" + contrastKey(); },
    describe: function (entry, word) {
      const c = state.contrast;
      if (!c || c.position !== word) return "";
      const foil = foilLogProb();
      return "vs \u201c" + c.word + "\u201d" + (foil === null ? "" : " (log p = " + foil.toFixed(3) +
        "): log p(" + entry.tokens[word] + ") \u2212 log p(" + c.word + ") = " +
        (entry.log_probs[word] - foil).toFixed(3));
    },
    decorateWord: function (button, entry, i) {
      if (state.contrast && state.contrast.position === i) button.classList.add("contrasted");
    },
    onSelect: showAlternatives,
    onError: function (err) { showError(err.message); },
    legend: function (entry, method, signed) {
      const c = state.contrast;
      if (!c || c.position !== viewer.state.word || !signed) return null;
      return ["favours \u201c" + c.word + "\u201d", "favours \u201c" + entry.tokens[c.position] + "\u201d"];
    },
  });

  // ---- captions ----

  async function caption(request, word) {
    if (!state.image) return;
    showError("");
    const view = await call("POST", "/api/caption", Object.assign({ image: state.image.id }, request));
    const image = state.image, first = !state.entry || state.entry.image !== image.id;
    state.caption = view;
    state.contrast = null;
    state.entry = {
      key: image.id + "|" + view.tokens.join(" "), image: image.id, tokens: view.tokens, log_probs: view.log_probs,
      methods: DATA.methods.map(function (m) { return m.name; }),
      signed: DATA.methods.filter(function (m) { return m.signed; }).map(function (m) { return m.name; }),
      width: image.width, height: image.height, heat_size: image.heat_size,
      suspect: view.suspect, suspect_rule: view.suspect_rule,
    };
    $("viewer-box").hidden = false;
    $("typed").value = view.source === "given" ? view.tokens.join(" ") : "";
    const end = Math.exp(view.end_log_prob).toFixed(2);
    say(image.name + " \u2014 " + (view.source === "given" ? "your caption, teacher-forced"
      : "the model's caption (beam " + view.beam_size + (view.prefix ? ", going on from your choice" : "") + ")") +
      "; p(the caption ends here) = " + end +
      (view.unknown.length ? "; not in the vocabulary, read as <UNK>: " + view.unknown.join(", ") : "") +
      (view.suspect_rule ? "; suspect words are underlined (" + view.suspect_rule + ")" : ""));
    viewer.show(state.entry, first ? image.url : null, word || 0);
    showContrast();
  }

  function recaption(word) {
    caption({ beam_size: Number($("beam").value) }, word).catch(function (err) { showError(err.message); });
  }

  function showAlternatives(word) {
    const list = $("alternatives"), view = state.caption;
    list.replaceChildren();
    $("contrast-word").textContent = view ? view.tokens[word] : "";
    showContrast();
    if (!view) return;
    const chosen = view.tokens[word];
    view.alternatives[word].forEach(function (alt) {
      const item = document.createElement("li"), button = document.createElement("button");
      button.type = "button";
      button.className = "alt" + (alt.word === chosen ? " chosen" : "");
      button.textContent = alt.word === END ? "(end the caption here)" : alt.word;
      button.title = alt.word === END ? "stop the caption before this word" : "let the model go on after \u201c" + alt.word + "\u201d";
      button.disabled = alt.word === END && word === 0;
      button.addEventListener("click", function () {
        if (alt.word === END) {
          caption({ words: view.tokens.slice(0, word) }, word - 1).catch(function (err) { showError(err.message); });
        } else {
          caption({ beam_size: Number($("beam").value), prefix: view.tokens.slice(0, word).concat([alt.word]) }, word)
            .catch(function (err) { showError(err.message); });
        }
      });
      const bar = document.createElement("span"), fill = document.createElement("span");
      bar.className = "bar-p";
      fill.style.width = (100 * Math.exp(alt.log_prob)).toFixed(1) + "%";
      bar.appendChild(fill);
      const prob = document.createElement("span");
      prob.className = "prob";
      prob.textContent = "p = " + Math.exp(alt.log_prob).toFixed(3);
      item.append(button, bar, prob);
      if (alt.word !== chosen) {
        const vs = document.createElement("button");
        vs.type = "button";
        vs.className = "vs";
        vs.textContent = "vs";
        vs.title = "why \u201c" + chosen + "\u201d and not \u201c" + alt.word + "\u201d?";
        vs.dataset.foil = alt.word;
        vs.addEventListener("click", function () { setContrast(word, alt.word); });
        item.appendChild(vs);
      }
      list.appendChild(item);
    });
  }

  // ---- contrast: why this word and not the foil? ----

  function showContrast() {
    const c = state.contrast, word = viewer.state.word;
    $("contrast-clear").hidden = !c;
    $("contrast-note").textContent = c ? "The map of \u201c" + state.caption.tokens[c.position] + "\u201d shows " +
      "log p(" + state.caption.tokens[c.position] + ") \u2212 log p(" + c.word + ") at that place." +
      (c.position !== word ? " (Click \u201c" + state.caption.tokens[c.position] + "\u201d to see it.)" : "") : "";
    document.querySelectorAll("#words .word").forEach(function (button) {
      button.classList.toggle("contrasted", Boolean(c) && Number(button.dataset.index) === c.position);
    });
  }

  function setContrast(position, word) {
    state.contrast = word ? { position: position, word: word } : null;
    showError("");
    showContrast();
    viewer.refresh();
  }

  $("contrast-form").addEventListener("submit", function (event) {
    event.preventDefault();
    const foil = $("foil").value.trim().toLowerCase();
    if (foil && state.caption) setContrast(viewer.state.word, foil);
  });
  $("contrast-clear").addEventListener("click", function () { setContrast(0, null); });

  // ---- images: the gallery, uploads ----

  async function opened(request) {
    showError("");
    say("opening\u2026");
    state.image = await request;
    state.entry = null;
    ["recaption", "typed", "explain-typed"].forEach(function (id) { $(id).disabled = false; });
    await caption({ beam_size: Number($("beam").value) });
  }

  function openGallery(name) {
    opened(call("POST", "/api/open", { name: name })).catch(function (err) { showError(err.message); });
  }

  function upload(file) {
    const form = new FormData();
    form.append("file", file, file.name);
    opened(call("POST", "/api/upload", undefined, form)).catch(function (err) { showError(err.message); say(""); });
  }

  const gallery = $("gallery");
  gallery.replaceChildren.apply(gallery, DATA.gallery.map(function (name) {
    const item = document.createElement("li"), card = document.createElement("button");
    card.type = "button";
    card.className = "card";
    card.dataset.name = name;
    const img = document.createElement("img"), label = document.createElement("span");
    img.loading = "lazy";
    img.decoding = "async";
    img.alt = name;
    img.src = "/api/gallery/thumb?name=" + encodeURIComponent(name);
    label.textContent = name;
    card.append(img, label);
    item.appendChild(card);
    return item;
  }));
  gallery.addEventListener("click", function (event) {
    const card = event.target.closest(".card");
    if (card) openGallery(card.dataset.name);
  });

  const drop = $("drop");
  ["dragenter", "dragover"].forEach(function (type) {
    document.addEventListener(type, function (event) { event.preventDefault(); drop.classList.add("over"); });
  });
  ["dragleave", "drop"].forEach(function (type) {
    document.addEventListener(type, function (event) { event.preventDefault(); drop.classList.remove("over"); });
  });
  document.addEventListener("drop", function (event) {
    const file = event.dataTransfer && event.dataTransfer.files[0];
    if (file) upload(file);
  });
  $("upload").addEventListener("change", function (event) {
    if (event.target.files[0]) upload(event.target.files[0]);
    event.target.value = "";
  });

  // ---- decoding and typed captions ----

  for (let k = 1; k <= DATA.max_beam_size; k++) {
    const option = document.createElement("option");
    option.value = String(k);
    option.textContent = String(k);
    option.selected = k === DATA.beam_size;
    $("beam").appendChild(option);
  }
  $("beam").addEventListener("change", function () { recaption(0); });
  $("recaption").addEventListener("click", function () { recaption(0); });
  $("typed-form").addEventListener("submit", function (event) {
    event.preventDefault();
    const text = $("typed").value.trim();
    if (text) caption({ text: text }).catch(function (err) { showError(err.message); });
  });
  if (!DATA.gallery.length) gallery.hidden = true;
})();
