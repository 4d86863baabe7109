// Orthanc Transfers: the "Transfers accelerator" button of Orthanc Explorer.
//
// Appended to Orthanc Explorer's explorer.js by the Python plugin
// (orthanc.ExtendOrthancExplorer). On a patient, study or series page it
// lists this server's peers with their /transfers/peers status, starts
// POST ../transfers/send to the chosen one, then follows the job
// (GET ../jobs/{id}) on the page until it succeeds or fails.

(function () {
  var LEVELS = { patient: 'Patient', study: 'Study', series: 'Series' };
  var STATUS_TEXT = {
    installed: 'transfers plugin',
    bidirectional: 'transfers plugin, pulls from here (RemoteSelf)',
    disabled: 'no transfers plugin: plain upload'
  };

  function escapeHtml(text) {
    return String(text).replace(/[&<>"']/g, function (c) {
      return { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c];
    });
  }

  function panelOf(page) {
    return $('#transfers-accelerator-' + page);
  }

  function say(page, html) {
    panelOf(page).html(html).show();
  }

  function follow(page, jobId) {
    $.ajax({
      url: '../jobs/' + jobId, dataType: 'json', cache: false,
      success: function (job) {
        var link = ' <a href="#job?uuid=' + escapeHtml(jobId) + '">details</a>';
        var content = job.Content || {};
        if (job.State === 'Success') {
          var commitment = content.Commitment || {};
          say(page, '<b>Sent to ' + escapeHtml(content.Peer) + '</b>: ' +
              escapeHtml(commitment.Verified || 0) + ' instance(s) checked by MD5 there, ' +
              escapeHtml(commitment.AlreadyOnPeer || 0) + ' already present.' + link);
        } else if (job.State === 'Failure') {
          say(page, '<b style="color:#c62828">Failed</b>: ' + escapeHtml(job.ErrorDescription) + link);
        } else {
          say(page, escapeHtml(job.State) + ': ' + escapeHtml(job.Progress) + ' % (' +
              escapeHtml(content.UploadedSizeMB || 0) + ' of ' + escapeHtml(content.TotalSizeMB || 0) +
              ' MB)' + link);
          setTimeout(function () { follow(page, jobId); }, 1000);
        }
      },
      error: function (xhr) {
        say(page, 'Cannot read job ' + escapeHtml(jobId) + ' (HTTP ' + xhr.status + ')');
      }
    });
  }

  function send(page, peer) {
    var body = {
      Resources: [{ Level: LEVELS[page], ID: $.mobile.pageData.uuid }],
      Compression: 'gzip',
      Peer: peer
    };
    say(page, 'Starting the transfer to ' + escapeHtml(peer) + '…');
    $.ajax({
      url: '../transfers/send', type: 'POST', data: JSON.stringify(body), dataType: 'json',
      success: function (answer) {
        if (answer.RemoteJob) {
          say(page, escapeHtml(answer.Peer) + ' pulls the data itself: job ' +
              escapeHtml(answer.RemoteJob) + ' there.');
        } else {
          follow(page, answer.ID);
        }
      },
      error: function (xhr) {
        var reason = xhr.responseText;
        try { reason = JSON.parse(xhr.responseText).Details || reason; } catch (e) { }
        say(page, '<b style="color:#c62828">Not started</b>: ' + escapeHtml(reason || ('HTTP ' + xhr.status)));
      }
    });
  }

  function choosePeer(page) {
    say(page, 'Asking the peers…');
    $.ajax({
      url: '../transfers/peers', dataType: 'json', cache: false,
      success: function (peers) {
        var names = Object.keys(peers).sort();
        if (names.length === 0) {
          say(page, 'This server has no Orthanc peers (OrthancPeers in its configuration).');
          return;
        }
        var html = 'Send to:<ul class="transfers-peers">';
        for (var i = 0; i < names.length; i++) {
          html += '<li><a href="#" data-peer="' + escapeHtml(names[i]) + '">' + escapeHtml(names[i]) +
            '</a> — ' + escapeHtml(STATUS_TEXT[peers[names[i]]] || peers[names[i]]) + '</li>';
        }
        say(page, html + '</ul>');
        panelOf(page).find('a[data-peer]').click(function (e) {
          e.preventDefault();
          send(page, $(this).attr('data-peer'));
        });
      },
      error: function (xhr) {
        say(page, 'Cannot list the peers (HTTP ' + xhr.status + ')');
      }
    });
  }

  $.each(LEVELS, function (page) {
    $('#' + page).live('pagebeforecreate', function () {
      if ($('#transfers-accelerator-button-' + page).length) {
        return;
      }
      var button = $('<a>')
        .attr('id', 'transfers-accelerator-button-' + page)
        .attr('data-role', 'button').attr('href', '#')
        .attr('data-icon', 'forward').attr('data-theme', 'e')
        .text('Transfers accelerator');
      var panel = $('<div>').attr('id', 'transfers-accelerator-' + page)
        .css({ padding: '0.5em', margin: '0.5em 0', border: '1px solid #ccc', 'border-radius': '0.5em' })
        .hide();
      var interact = $('#' + page + '-delete').closest('ul');
      button.insertBefore(interact);
      panel.insertAfter(button);
      button.click(function (e) {
        e.preventDefault();
        choosePeer(page);
      });
    });
    $('#' + page).live('pagebeforeshow', function () {
      panelOf(page).hide().empty();
    });
  });
})();
