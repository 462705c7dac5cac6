// captionlens viewer: the one front end of the static report and of the live page (`captionlens serve`).
// It shows one caption of one image: a button per word, a radio per method, the word's heatmap coloured with
// the page's colour scale (matplotlib colormaps as lookup tables) and blended over the photo on a <canvas>,
// the opacity slider, the "fade cold areas" switch, the legend and the keyboard walk (left/right: words,
// up/down: methods). Where the heatmaps come from is the page's business: `options.sprite(entry, method)`
// resolves to a PNG data: URL of a grayscale sprite, every word's map stacked vertically (0..255 = colormap
// position), as `viz/report.py` writes them for both pages.
//
// entry: {key, tokens, log_probs, methods, signed, width, height, heat_size: [w, h], suspect, suspect_rule}
// options: {colormaps, labels, sprite(entry, method), spriteKey(entry, method)?, isActive()?, preferred?,
//           probabilities?: show each word's p under it, describe(entry, word)?: more text for the word line,
//           decorateWord(button, entry, word)?, onSelect(word)?, onError(error)?,
//           legend(entry, method, signed)?: [low, high] labels of the colour scale}
(function () {
  "use strict";

  window.captionlensViewer = function (options) {
    const $ = (id) => document.getElementById(id);
    const photo = $("photo"), canvas = $("overlay"), words = $("words"), methodsBox = $("methods");
    const opacity = $("opacity"), fade = $("fade"), logprob = $("logprob");
    const decoded = {};       // sprite key -> Promise<Uint8ClampedArray> (RGBA of the sprite)
    const state = { entry: null, word: 0, method: null, preferred: options.preferred || null, ticket: 0 };
    const spriteKey = options.spriteKey || function (entry, method) { return entry.key + "/" + method; };
    const onError = options.onError || function (err) { logprob.textContent = err.message; };

    function decode(url, what) {
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
        img.onerror = function () { reject(new Error("cannot decode the " + what + " heatmap")); };
        img.src = url;
      });
    }

    function spritePixels(entry, method) {
      const key = spriteKey(entry, method);
      if (!decoded[key]) {
        decoded[key] = Promise.resolve(options.sprite(entry, method)).then(function (url) {
          return decode(url, method);
        });
        decoded[key].catch(function () { delete decoded[key]; });   // a failed or cancelled load can be asked again
      }
      return decoded[key];
    }

    function isSigned(entry, method) { return entry.signed.indexOf(method) >= 0; }

    function drawLegend(entry, method) {
      const signed = isSigned(entry, method);
      const lut = options.colormaps[signed ? "signed" : "unsigned"];
      const legend = $("legend"), ctx = legend.getContext("2d"), row = ctx.createImageData(256, 1);
      for (let i = 0; i < 256; i++) {
        row.data.set([lut[3 * i], lut[3 * i + 1], lut[3 * i + 2], 255], 4 * i);
      }
      ctx.putImageData(row, 0, 0);
      const ends = options.legend ? options.legend(entry, method, signed) : null;
      $("legend-low").textContent = ends ? ends[0] : (signed ? "lowers the word" : "low");
      $("legend-high").textContent = ends ? ends[1] : (signed ? "raises it" : "high");
    }

    function describe(word) {
      const entry = state.entry, lp = entry.log_probs[word];
      const more = options.describe ? options.describe(entry, word) : "";
      logprob.textContent = "\u201c" + entry.tokens[word] + "\u201d  log p = " + lp.toFixed(3) +
        "  (p = " + Math.exp(lp).toFixed(3) + ")" + (more ? "  \u00b7  " + more : "");
    }

    function render(word) {
      const entry = state.entry, method = state.method, ticket = ++state.ticket;
      if (!entry || !method || !entry.tokens.length) return;
      describe(word);
      const key = spriteKey(entry, method);
      spritePixels(entry, method).then(function (pixels) {
        if (ticket !== state.ticket) return;
        const w = entry.heat_size[0], h = entry.heat_size[1], offset = word * w * h * 4;
        const signed = isSigned(entry, method), lut = options.colormaps[signed ? "signed" : "unsigned"];
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
        canvas.dataset.key = key;
      }).catch(function (err) { if (ticket === state.ticket) onError(err); });
    }

    function select(word) {
      const n = state.entry ? state.entry.tokens.length : 0;
      if (!n) return;
      state.word = Math.max(0, Math.min(n - 1, word));
      words.querySelectorAll(".word").forEach(function (button) {
        button.setAttribute("aria-pressed", String(Number(button.dataset.index) === state.word));
      });
      render(state.word);
      if (options.onSelect) options.onSelect(state.word);
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

    function clearCanvas() {
      canvas.width = 1;
      canvas.height = 1;
      canvas.getContext("2d").clearRect(0, 0, 1, 1);
      canvas.dataset.wordIndex = "";
      canvas.dataset.method = "";
      canvas.dataset.key = "";
    }

    function wordButton(entry, token, i) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "word";
      button.dataset.index = String(i);
      button.textContent = token;
      button.title = "log p = " + entry.log_probs[i].toFixed(3);
      if (options.probabilities) {
        const p = document.createElement("span");
        p.className = "p";
        p.textContent = Math.exp(entry.log_probs[i]).toFixed(2);
        button.appendChild(p);
      }
      if (entry.suspect && entry.suspect[i].suspect) {
        button.classList.add("suspect");
        button.title += " \u00b7 suspect: " + entry.suspect_rule + " (value " + entry.suspect[i].value + ")";
      }
      if (options.decorateWord) options.decorateWord(button, entry, i);
      button.addEventListener("click", function () { select(i); });
      button.addEventListener("mouseenter", function () { render(i); });
      button.addEventListener("mouseleave", function () { render(state.word); });
      return button;
    }

    // Show `entry`: its words and methods, the preferred method and word `word` (default 0). `photoUrl`
    // replaces the photo (left out: the same image, another caption).
    function show(entry, photoUrl, word) {
      state.entry = entry;
      state.ticket++;
      if (photoUrl) {
        photo.src = photoUrl;
        fitPhoto(entry);
        clearCanvas();
      }
      photo.alt = entry.tokens.join(" ");
      words.replaceChildren.apply(words, entry.tokens.map(function (token, i) { return wordButton(entry, token, i); }));
      methodsBox.querySelectorAll("label").forEach(function (label) { label.remove(); });
      entry.methods.forEach(function (method) {
        const label = document.createElement("label"), input = document.createElement("input");
        input.type = "radio";
        input.name = "method";
        input.value = method;
        input.addEventListener("change", function () { chooseMethod(method); });
        label.append(input, " " + (options.labels[method] || method));
        methodsBox.appendChild(label);
      });
      if (!entry.tokens.length || !entry.methods.length) {
        state.method = null;
        clearCanvas();
        logprob.textContent = entry.tokens.length ? "no explanation methods for this caption" : "no words";
        return;
      }
      state.word = Math.max(0, Math.min(entry.tokens.length - 1, word || 0));
      chooseMethod(entry.methods.indexOf(state.preferred) >= 0 ? state.preferred : entry.methods[0]);
      select(state.word);
    }

    function step(delta) {
      if (!state.entry || !state.method) return;
      const methods = state.entry.methods, i = methods.indexOf(state.method);
      chooseMethod(methods[(i + delta + methods.length) % methods.length]);
    }

    document.addEventListener("keydown", function (event) {
      if ((options.isActive && !options.isActive()) || !state.entry) return;
      if (event.target.matches("input[type=range], input[type=search], input[type=text], textarea, select")) return;
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
    opacity.addEventListener("input", function () { canvas.style.opacity = opacity.value; });
    fade.addEventListener("change", function () { render(state.word); });
    canvas.style.opacity = opacity.value;

    return {
      show: show,
      select: select,
      chooseMethod: chooseMethod,
      // Draw the current word again (after what `spriteKey` depends on changed, e.g. a contrast).
      refresh: function () { if (state.entry && state.method) { drawLegend(state.entry, state.method); render(state.word); } },
      // Write the current word's line again (after what `options.describe` reads changed).
      redescribe: function () { if (state.entry && state.entry.tokens.length) describe(state.word); },
      state: state,
    };
  };
})();
