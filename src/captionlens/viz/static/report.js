// captionlens report viewer: colours and blends per-word heatmaps in the browser.
// Heatmaps arrive per image as <entry.assets>/heat.js, which calls captionlensHeat(stem, {method: PNG data URL});
// each PNG is a grayscale sprite of all words stacked vertically (0..255 = colormap position). Loading them
// through a script and data: URLs keeps the canvas readable when the page is opened from file://.
(function () {
  "use strict";
  const DATA = JSON.parse(document.getElementById("captionlens-data").textContent);
  const $ = (id) => document.getElementById(id);
  const viewer = $("viewer"), photo = $("photo"), canvas = $("overlay"), words = $("words");
  const methodsBox = $("methods"), opacity = $("opacity"), fade = $("fade"), logprob = $("logprob");
  const pendingHeat = {};   // stem -> {promise, resolve}
  const decoded = {};       // stem/method -> Promise<Uint8ClampedArray> (RGBA of the sprite)
  const state = { index: -1, entry: null, word: 0, method: null, preferred: null, ticket: 0 };

  window.captionlensHeat = function (stem, sprites) {
    if (pendingHeat[stem]) pendingHeat[stem].resolve(sprites);
  };

  function asset(entry, file) { return entry.assets + "/" + file; }

  function heatSprites(entry) {
    if (!pendingHeat[entry.stem]) {
      const slot = {};
      slot.promise = new Promise(function (resolve, reject) {
        slot.resolve = resolve;
        const script = document.createElement("script");
        script.src = asset(entry, "heat.js");
        script.onerror = function () { reject(new Error("cannot load " + script.src)); };
        document.head.appendChild(script);
      });
      pendingHeat[entry.stem] = slot;
    }
    return pendingHeat[entry.stem].promise;
  }

  function spritePixels(entry, method) {
    const key = entry.stem + "/" + method;
    if (!decoded[key]) {
      decoded[key] = heatSprites(entry).then(function (sprites) {
        return new Promise(function (resolve, reject) {
          const img = new Image();
          img.onload = function () {
            const scratch = document.createElement("canvas");
            scratch.width = img.width;
            scratch.height = img.height;
            const ctx = scratch.getContext("2d");
            ctx.drawImage(img, 0, 0);
            resolve(ctx.getImageData(0, 0, img.width, img.height).data);
          };
          img.onerror = function () { reject(new Error("cannot decode " + method + " heatmap of " + entry.name)); };
          img.src = sprites[method];
        });
      });
    }
    return decoded[key];
  }

  function isSigned(entry, method) { return entry.signed.indexOf(method) >= 0; }

  function drawLegend(entry, method) {
    const signed = isSigned(entry, method);
    const lut = DATA.colormaps[signed ? "signed" : "unsigned"];
    const legend = $("legend"), ctx = legend.getContext("2d"), row = ctx.createImageData(256, 1);
    for (let i = 0; i < 256; i++) {
      row.data.set([lut[3 * i], lut[3 * i + 1], lut[3 * i + 2], 255], 4 * i);
    }
    ctx.putImageData(row, 0, 0);
    $("legend-low").textContent = signed ? "lowers the word" : "low";
    $("legend-high").textContent = signed ? "raises it" : "high";
  }

  function describe(word) {
    const entry = state.entry, lp = entry.log_probs[word];
    logprob.textContent = "\u201c" + entry.tokens[word] + "\u201d  log p = " + lp.toFixed(3) +
      "  (p = " + Math.exp(lp).toFixed(3) + ")";
  }

  function render(word) {
    const entry = state.entry, method = state.method, ticket = ++state.ticket;
    if (!entry || !method || !entry.tokens.length) return;
    describe(word);
    spritePixels(entry, method).then(function (pixels) {
      if (ticket !== state.ticket) return;
      const w = entry.heat_size[0], h = entry.heat_size[1], offset = word * w * h * 4;
      const signed = isSigned(entry, method), lut = DATA.colormaps[signed ? "signed" : "unsigned"];
      const out = new ImageData(w, h);
      for (let p = 0; p < w * h; p++) {
        const v = pixels[offset + 4 * p];
        const strength = signed ? Math.abs(v - 127.5) / 127.5 : v / 255;
        out.data[4 * p] = lut[3 * v];
        out.data[4 * p + 1] = lut[3 * v + 1];
        out.data[4 * p + 2] = lut[3 * v + 2];
        out.data[4 * p + 3] = fade.checked ? Math.round(255 * strength) : 255;
      }
      canvas.width = w;
      canvas.height = h;
      canvas.getContext("2d").putImageData(out, 0, 0);
      canvas.dataset.wordIndex = String(word);
      canvas.dataset.method = method;
    }).catch(function (err) { logprob.textContent = err.message; });
  }

  function select(word) {
    const n = state.entry.tokens.length;
    if (!n) return;
    state.word = Math.max(0, Math.min(n - 1, word));
    words.querySelectorAll(".word").forEach(function (button) {
      button.setAttribute("aria-pressed", String(Number(button.dataset.index) === state.word));
    });
    render(state.word);
  }

  function chooseMethod(method) {
    state.method = method;
    state.preferred = method;
    methodsBox.querySelectorAll("input").forEach(function (input) { input.checked = input.value === method; });
    drawLegend(state.entry, method);
    render(state.word);
  }

  function fitPhoto(entry) {
    const maxW = Math.min(900, window.innerWidth * 0.88), maxH = Math.min(560, window.innerHeight * 0.6);
    const scale = Math.min(maxW / entry.width, maxH / entry.height);
    photo.style.width = Math.round(entry.width * scale) + "px";
    photo.style.height = Math.round(entry.height * scale) + "px";
  }

  function open(index) {
    const entry = DATA.entries[index];
    state.index = index;
    state.entry = entry;
    state.ticket++;
    $("viewer-title").textContent = entry.name + " \u2014 " + entry.tokens.join(" ");
    photo.src = asset(entry, "image.jpg");
    photo.alt = entry.tokens.join(" ");
    fitPhoto(entry);
    canvas.width = 1;
    canvas.height = 1;
    canvas.getContext("2d").clearRect(0, 0, 1, 1);
    canvas.dataset.wordIndex = "";
    canvas.dataset.method = "";
    words.replaceChildren();
    entry.tokens.forEach(function (token, i) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "word";
      button.dataset.index = String(i);
      button.textContent = token;
      button.title = "log p = " + entry.log_probs[i].toFixed(3);
      if (entry.suspect && entry.suspect[i].suspect) {
        button.classList.add("suspect");
        button.title += " \u00b7 suspect: " + entry.suspect_rule + " (value " + entry.suspect[i].value + ")";
      }
      button.addEventListener("click", function () { select(i); });
      button.addEventListener("mouseenter", function () { render(i); });
      button.addEventListener("mouseleave", function () { render(state.word); });
      words.appendChild(button);
    });
    methodsBox.querySelectorAll("label").forEach(function (label) { label.remove(); });
    entry.methods.forEach(function (method) {
      const label = document.createElement("label"), input = document.createElement("input");
      input.type = "radio";
      input.name = "method";
      input.value = method;
      input.addEventListener("change", function () { chooseMethod(method); });
      label.append(input, " " + (DATA.labels[method] || method));
      methodsBox.appendChild(label);
    });
    $("prev").disabled = index === 0;
    $("next").disabled = index === DATA.entries.length - 1;
    if (!viewer.open) viewer.showModal();
    history.replaceState(null, "", "#" + entry.stem);
    if (!entry.tokens.length || !entry.methods.length) {
      state.method = null;
      logprob.textContent = entry.tokens.length ? "no explanation methods for this caption" : "no words";
      return;
    }
    state.word = 0;
    chooseMethod(entry.methods.indexOf(state.preferred) >= 0 ? state.preferred : entry.methods[0]);
    select(0);
  }

  function step(delta) {
    if (!state.entry || !state.method) return;
    const methods = state.entry.methods, i = methods.indexOf(state.method);
    chooseMethod(methods[(i + delta + methods.length) % methods.length]);
  }

  document.addEventListener("keydown", function (event) {
    if (!viewer.open || event.target.matches("input[type=range], input[type=search]")) return;
    const actions = {
      ArrowRight: function () { select(state.word + 1); },
      ArrowLeft: function () { select(state.word - 1); },
      ArrowDown: function () { step(1); },
      ArrowUp: function () { step(-1); },
    };
    if (actions[event.key]) {
      event.preventDefault();
      actions[event.key]();
    }
  });

  $("gallery").addEventListener("click", function (event) {
    const card = event.target.closest(".card");
    if (card) open(Number(card.dataset.entry));
  });
  $("filter").addEventListener("input", function (event) {
    const query = event.target.value.trim().toLowerCase();
    document.querySelectorAll("#gallery li").forEach(function (item) {
      item.hidden = query !== "" && item.textContent.toLowerCase().indexOf(query) < 0;
    });
  });
  $("prev").addEventListener("click", function () { open(state.index - 1); });
  $("next").addEventListener("click", function () { open(state.index + 1); });
  $("close").addEventListener("click", function () { viewer.close(); });
  viewer.addEventListener("close", function () { history.replaceState(null, "", location.pathname); });
  opacity.addEventListener("input", function () { canvas.style.opacity = opacity.value; });
  fade.addEventListener("change", function () { render(state.word); });
  canvas.style.opacity = opacity.value;

  const linked = DATA.entries.findIndex(function (entry) { return "#" + entry.stem === location.hash; });
  if (linked >= 0) open(linked);
})();
